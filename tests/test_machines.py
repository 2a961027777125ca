"""Resonator on several machines: hosts that are network namespaces, cut off and put back.

Five hosts on one switch (``tests/hosts.py``): ``db`` runs the
server (the stand-in with a token, or Postgres with a password) on its
address, ``lhs``, ``rhs`` and ``ops`` a worker each, ``cli`` the prompt. A
host reaches the others and nothing else. Leases are two seconds and
operators take one, as in test_crashes.py.

- The article's three failure modes, each process on a host of its own.
- Partitions: each kind of host is cut off until a lease has visibly lapsed
  (a watcher on the server's host sees the task unclaimed, or another
  process takes up the work), then put back. The answer is right, and an
  operator runs twice only if its process lost its lease.
- Who gets in: 401s and /health on the stand-in, a process with a wrong
  token or password, and the stand-in refusing to listen beyond loopback
  without a token.

Namespaces need root: without it, or where they are refused, every test
skips and says why; the Postgres ones also need RESONATE_PG_SQL, as in
test_postgres.py. One topology per server serves every test, and each test
begins by putting it back as it was: every cable in, lhs, rhs and ops up,
nothing else running. Every wait is for a printed line.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from resonator.harness.processes import WAIT, Topology, python, started
from tests.helpers import (
    ARTICLE,
    VALUE,
    an_exp_worker_dies,
    ask,
    available,
    envelope,
    kill,
    operators_of,
    operators_ran_once,
    the_ops_worker_dies,
    the_prompt_dies,
)
from tests.hosts import Hosts, Unavailable

if TYPE_CHECKING:
    from collections.abc import Iterator

HOSTS = ("db", "lhs", "rhs", "ops", "cli")
# The host each process runs on, by the name the tests give it.
PLACES = {"server": "db", "watch": "db", "lhs": "lhs", "rhs": "rhs", "ops": "ops"}
PLACES |= {"another": "ops", "intruder": "ops"}
PLACES |= dict.fromkeys(("prompt", "calculate", "first", "second", "batch", "after"), "cli")
WORKERS = {"lhs": ("exp", {}), "rhs": ("exp", {}), "ops": ("ops", {"RESONATOR_OP_DELAY": "1"})}
TOKEN = secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    try:
        with Hosts(*HOSTS) as made:
            yield made
    except Unavailable as why:
        pytest.skip(str(why))


@pytest.fixture(scope="module", params=["stand-in", "postgres"])
def cluster(request: pytest.FixtureRequest, hosts: Hosts) -> Iterator[Topology]:
    """The server on db, on the stand-in with a token (and -v) or on Postgres with a password."""
    kind = available(request.param)
    if kind == "stand-in":
        topology = Topology(kind, ("-v",), RESONATOR_TTL="2", RESONATE_TOKEN=TOKEN)
    else:
        topology = Topology(kind, RESONATOR_TTL="2")
    with topology:
        topology.host = hosts.addresses["db"]
        topology.where = {name: hosts.on(host) for name, host in PLACES.items()}
        topology.server()
        yield topology


@pytest.fixture
def machines(cluster: Topology, hosts: Hosts) -> Topology:
    """The cluster as every test expects it: every cable in, lhs, rhs and ops up, nothing else."""
    for host in HOSTS:
        hosts.mend(host)
    for name, process in cluster.processes.items():
        if name not in ("server", *WORKERS) and process.popen.poll() is None:
            kill(process)
    down = [pid for pid in WORKERS if pid not in cluster.processes or gone(cluster, pid)]
    for pid in down:
        group, env = WORKERS[pid]
        cluster.worker(group, pid, wait=False, **env)
    for pid in down:
        started(cluster[pid], WORKERS[pid][0], pid)
    return cluster


def gone(topology: Topology, name: str) -> bool:
    return topology[name].popen.poll() is not None


def unclaimed(id: str) -> str:
    """A row of a watched tree: promise ``id``'s task waits, and nobody has it."""
    return rf"(^|\s){re.escape(id)}\s.*\sunclaimed$"


# ── The article's failure modes, across hosts ───────────────────────────────


def test_an_exp_worker_dies_and_its_work_waits_for_the_same_pid(machines: Topology) -> None:
    an_exp_worker_dies(machines, "dies")


def test_the_prompt_dies_and_a_new_one_attaches(machines: Topology) -> None:
    the_prompt_dies(machines, "attach")


def test_the_ops_worker_dies_mid_operation_and_another_takes_it(machines: Topology) -> None:
    the_ops_worker_dies(machines, "taken")


# ── Partitions longer than a lease ──────────────────────────────────────────


def test_lhs_cut_off_while_it_holds_a_lease(machines: Topology, hosts: Hosts) -> None:
    # This lhs takes a second over each step: the cut lands while it holds one.
    kill(machines["lhs"])
    machines.worker("exp", "lhs", RESONATOR_EXP_DELAY="1")
    prompt = machines.prompt("--id", "lhs-cut", ARTICLE)
    machines["lhs"].wait_for(r"^exp/lhs: = 1 \+ 2  \[lhs-cut:1\]$")
    hosts.cut("lhs")
    watch = machines.prompt("--watch", "--id", "lhs-cut", name="watch")
    watch.wait_for(unclaimed("lhs-cut:1"))  # the lease lapsed; the work waits for lhs
    hosts.mend("lhs")
    assert prompt.wait_for(VALUE).group(0) == "-3"
    operators_ran_once(machines, "lhs-cut")
    kill(machines["lhs"])  # the next test gets one that takes no time


@pytest.mark.parametrize("host", ["ops", "db"])
def test_a_host_cut_off_mid_operation(machines: Topology, hosts: Hosts, host: str) -> None:
    # The ops worker's host, or the server's: either way no heartbeat for the
    # running operator reaches the server. The watcher is on db: it still
    # reaches the server when db is cut off from the other hosts.
    id = f"{host}-cut"
    prompt = machines.prompt("--id", id, ARTICLE)
    machines["ops"].wait_for(rf"^ops/ops: \* 3 -1  \[{id}:3\]$")
    hosts.cut(host)
    watch = machines.prompt("--watch", "--id", id, name="watch")
    watch.wait_for(unclaimed(f"{id}:3"))
    hosts.mend(host)
    assert prompt.wait_for(VALUE).group(0) == "-3"
    ran = operators_of(machines, id)
    # * 3 -1 had its operands, so + and - had settled: they ran once. * may
    # have run twice, since its worker lost the lease it ran under.
    assert (ran[f"{id}:1.3"], ran[f"{id}:2.3"]) == (1, 1), ran
    assert ran[f"{id}:3"] in (1, 2), ran


def test_the_prompts_host_cut_off_while_it_holds_the_root(machines: Topology, hosts: Hosts) -> None:
    # The prompt runs the root first, and takes three seconds over it: the
    # cut lands before it dispatches anything.
    prompt = machines.prompt("-v", "--id", "cli-cut", ARTICLE, RESONATOR_EXP_DELAY="3")
    prompt.wait_for(r"^prompt: = \(1 \+ 2\) \* \(3 - 4\)  \[cli-cut\]$")
    hosts.cut("cli")
    # Only once the prompt's lease lapsed can an exp worker run the root and
    # dispatch its left operand.
    machines["lhs"].wait_for(r"^exp/lhs: = 1 \+ 2  \[cli-cut:1\]$")
    hosts.mend("cli")
    assert prompt.wait_for(VALUE).group(0) == "-3"
    operators_ran_once(machines, "cli-cut")


def test_a_cut_shorter_than_half_the_lease_costs_no_second_run(
    machines: Topology, hosts: Hosts
) -> None:
    # A 4 s lease, renewed by heartbeats, and an operator that takes 6 s.
    kill(machines["ops"])
    ops = machines.worker("ops", "ops", RESONATOR_TTL="4", RESONATOR_OP_DELAY="6")
    prompt = machines.prompt("--id", "short-cut", "1 + 2")
    ops.wait_for(r"^ops/ops: \+ 1 2  \[short-cut:3\]$")
    # Waiting for time to pass is the point: the cable is cut 1.9 s into the
    # operator, for 1.9 s, less than half the lease. The SDK's heartbeat
    # sent one beat, half a lease in, which waited in TCP's retransmissions
    # until the lease had lapsed, and the operator ran again.
    time.sleep(1.9)
    hosts.cut("ops")
    time.sleep(1.9)
    hosts.mend("ops")
    assert prompt.wait_for(VALUE).group(0) == "3"
    assert operators_of(machines, "short-cut") == {"short-cut:3": 1}
    kill(ops)  # the next test gets the usual one


def test_a_computation_that_settles_while_its_prompt_is_cut_off_is_printed(
    machines: Topology, hosts: Hosts
) -> None:
    # The prompt's host is cut off as the operator starts, for longer than
    # the computation takes. On Postgres its drains hang and it sees the
    # outage; once the cable is back it reads the root again, resolved, and
    # it printed "error: computation gone ended resolved" instead of 3.
    prompt = machines.prompt("--id", "gone", "1 + 2")
    machines["ops"].wait_for(r"^ops/ops: \+ 1 2  \[gone:3\]$")
    hosts.cut("cli")
    # The computation ends without the prompt: an exp worker fulfils the root.
    watch = machines.prompt("--watch", "--id", "gone", name="watch")
    watch.wait_for(r"^gone\s.*\sresolved\s+3$")
    hosts.mend("cli")
    assert prompt.wait_for(VALUE).group(0) == "3"
    assert prompt.wait_closed() == 0


# ── Who gets in ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize("cluster", ["stand-in"], indirect=True)
def test_without_the_token_nothing_changes(machines: Topology, hosts: Hosts) -> None:
    url, server = machines.url, machines["server"]
    mark = len(server.lines)
    tags = {"resonate:target": "poll://any@ops", "resonate:origin": "intruder"}
    create = envelope("promise.create", id="intruder", timeoutAt=2**62, param={}, tags=tags)
    for token in (None, f"not-{TOKEN}"):
        assert hosts.inside("cli", partial(ask, url, create, token))[0] == 401
        # A stream for lhs's address, which would have taken lhs's place.
        assert hosts.inside("cli", partial(ask, f"{url}/poll/exp/lhs", None, token))[0] == 401
        health = hosts.inside("cli", partial(ask, f"{url}/health", None, token))
        assert health == (200, b'{"status": "ok"}')
    get = envelope("promise.get", id="intruder")
    assert hosts.inside("cli", partial(ask, url, get, TOKEN))[0] == 404
    status, body = hosts.inside("cli", partial(ask, f"{url}/health", None, TOKEN))
    assert status == 200 and "promises" in json.loads(body)
    # lhs kept its stream: it takes its work, and was never made to reconnect.
    after = machines.prompt("--id", "after-401", ARTICLE, name="after")
    assert after.wait_for(VALUE).group(0) == "-3"
    assert "stream closed: exp/lhs" not in server.lines[mark:]
    cli = hosts.addresses["cli"]
    for why in ("no token", "a wrong token"):
        assert f"refused requests from {cli}: {why} (401)" in server.lines[mark:]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("cluster", ["stand-in"], indirect=True)
def test_a_process_with_a_wrong_token_says_so_once(machines: Topology) -> None:
    refused = f"the Resonate server at {machines.url} refused"
    for token, what in (
        ("not-the-token", "this process's token (RESONATE_TOKEN)"),
        ("", "this process, which has no token (set RESONATE_TOKEN)"),
    ):
        batch = machines.prompt("1 + 2", name="batch", RESONATE_TOKEN=token)
        assert batch.wait_closed() == 1
        assert batch.lines == [f"resonator: {refused} {what}"]
    worker = machines.worker("ops", "intruder", wait=False, RESONATE_TOKEN="not-the-token")
    worker.wait_for(f"^resonator: {re.escape(refused)} this process's token")
    cpu = cpu_seconds(worker.popen.pid)
    # While a computation runs elsewhere, the worker says nothing more, and
    # does not spin (it asks again now and then, no more often than every 2 s).
    after = machines.prompt("--id", "after-token", ARTICLE, name="after")
    assert after.wait_for(VALUE).group(0) == "-3"
    assert len(worker.lines) == 1, worker.lines
    assert cpu_seconds(worker.popen.pid) - cpu < 0.5


@pytest.mark.parametrize("cluster", ["postgres"], indirect=True)
def test_a_wrong_password_is_refused_and_said_once(machines: Topology) -> None:
    secret = re.search(r"//postgres:([^@]+)@", machines.url)
    assert secret, machines.url
    wrong = machines.url.replace(secret.group(1), "not-the-password")
    shown = machines.url.replace(secret.group(1), "***")
    refused = f'{shown} (password authentication failed for user "postgres")'
    batch = machines.start("batch", python("-m", "resonator", "--url", wrong, "1 + 2"))
    assert batch.wait_closed() == 1
    assert batch.lines == [f"resonator: cannot reach the Resonate server at {refused}"]
    worker = machines.worker("ops", "intruder", wait=False, RESONATE_URL=wrong)
    worker.wait_for("^cannot reach the Resonate server at ")
    after = machines.prompt("--id", "after-password", ARTICLE, name="after")
    assert after.wait_for(VALUE).group(0) == "-3"
    assert worker.lines == [f"cannot reach the Resonate server at {refused}; retrying"]
    # Nobody but resonator-postgres ever printed the password.
    others = [p for p in machines.history if p.name != "server"]
    assert not any(secret.group(1) in line for p in others for line in p.lines)
    # Postgres runs as nobody (it refuses root), and a restart keeps the password.
    assert os.stat(f"/proc/{machines.postmaster()}").st_uid != 0
    url = machines.url
    machines["server"].signal(signal.SIGTERM)
    assert machines["server"].wait_closed() == 0
    machines.server()
    assert machines.url == url


def test_the_stand_in_will_not_listen_beyond_loopback_without_a_token(hosts: Hosts) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RESONATE_TOKEN"}
    for address in (hosts.addresses["db"], "0.0.0.0"):
        done = subprocess.run(
            [*hosts.on("db"), *python("-m", "resonator.servers.devserver", "--host", address)],
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr == (
            f"resonator-devserver: will not listen on {address} without a token: anyone who "
            "can reach it could run and settle anything (set RESONATE_TOKEN, or --token)\n"
        )
