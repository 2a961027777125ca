"""Where the servers differ, and what Resonator does about it.

The real server (``resonate``, with the 0.10 id rule), the released 0.9.8
that refuses this SDK's ids, the stand-in and the protocol's rules that the
SDK's own model leaves out. These run where ``resonate`` is on PATH (CI puts
``../shared/resonate`` there), and skip elsewhere, saying why.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

import pytest
from resonate.resonate import DEFAULT_TTL

from resonator.harness.processes import Process, Topology
from resonator.resonator import connect
from resonator.trace import Tracer
from tests.helpers import (
    ARTICLE,
    VALUE,
    ask,
    available,
    envelope,
    jwt_keys,
    kill,
    operator_runs,
    signed,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def post(url: str, kind: str, **data: Any) -> dict[str, Any]:
    """One request envelope to ``url``; the response envelope, whatever its status."""
    answer: dict[str, Any] = json.loads(ask(url, envelope(kind, **data))[1])
    return answer


# ── Leases ──────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("server", ["stand-in", "resonate"], indirect=True)
def test_a_worker_holding_tasks_of_two_computations_keeps_every_lease(server: str) -> None:
    # Operators outlast their lease (5 s against 3), so only heartbeats keep
    # them. One heartbeat for both computations' tasks is refused by the
    # protocol: each lease lapsed, each operator ran again and again, and
    # neither prompt answered within a minute.
    with Topology(server, RESONATOR_TTL="3") as topology:
        topology.server()
        topology.worker("exp", "lhs")
        topology.worker("exp", "rhs")
        ops = topology.worker("ops", "ops", RESONATOR_OP_DELAY="5")
        r1 = topology.prompt("--id", "r1", "1 + 2", name="r1")
        r2 = topology.prompt("--id", "r2", "3 + 4", name="r2")
        assert r1.wait_for(VALUE).group(0) == "3"
        assert r2.wait_for(VALUE).group(0) == "7"
        assert operator_runs(topology, "ops") == {"r1:3": 1, "r2:3": 1}
        assert not any("heartbeat" in line for line in ops.lines), ops.lines


def test_the_stand_in_refuses_a_heartbeat_across_origins_as_the_real_server_does(
    server: str,
) -> None:
    def heartbeat(url: str, *ids: str) -> dict[str, Any]:
        return post(url, "task.heartbeat", pid="p", tasks=[{"id": id, "version": 1} for id in ids])

    with Topology(server) as topology:
        topology.server()
        across = heartbeat(topology.url, "a:1", "b:1")
        within = heartbeat(topology.url, "a:1", "a:2.3")
    assert across["head"]["status"] == 400
    assert "All tasks must belong to the same origin" in json.dumps(across["data"])
    assert within["head"]["status"] == 200


# ── The server's own tools ──────────────────────────────────────────────────


def searched(url: str, limit: int) -> list[dict[str, Any]]:
    """Every page of a search by origin, as ``resonate tree`` pages it, timestamps left out."""
    pages, cursor = [], None
    while True:
        data: dict[str, Any] = {"limit": limit, "tags": {"resonate:origin": "t"}}
        answer = post(url, "promise.search", **data | ({"cursor": cursor} if cursor else {}))
        assert answer["head"]["status"] == 200, answer
        page = answer["data"]
        for promise in page["promises"]:
            del promise["createdAt"], promise["settledAt"], promise["timeoutAt"]
        pages.append(page)
        if not (cursor := page.get("cursor")):
            return pages


def test_both_servers_answer_a_search_the_same_way() -> None:
    answers = []
    for server in ("stand-in", available("resonate")):
        with Topology(server) as topology:
            topology.standard()
            assert topology.calculate("--id", "t", ARTICLE).stdout == "-3\n"
            answers.append(searched(topology.url, limit=4))
    stand_in, real = answers
    assert [len(page["promises"]) for page in real] == [4, 4, 2]
    assert stand_in == real


@pytest.fixture
def computed(server: str) -> Iterator[Topology]:
    """A server on which computation t, the article's, has run."""
    with Topology(server) as topology:
        topology.standard()
        assert topology.calculate("--id", "t", ARTICLE).stdout == "-3\n"
        yield topology


def test_resonate_tree_shows_the_ten_promises_that_resonator_tree_shows(
    computed: Topology,
) -> None:
    available("resonate")
    theirs = subprocess.run(
        ["resonate", "tree", "t", "--server", computed.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    ours = computed.calculate("--tree", "--id", "t").stdout.splitlines()
    assert len(theirs) == len(ours) == 10
    # The same ids, in the same places of the same tree.
    assert [row.split(" ")[0] for row in ours] == [row.split(" ")[0] for row in theirs]


# ── A durable real server ───────────────────────────────────────────────────


def test_resonate_serve_killed_mid_computation_and_restarted_on_its_file() -> None:
    deep = "((1 + 2) * (3 - 4)) - ((5 * 6) + (7 - 8))"  # -32, seven operators
    with Topology(available("resonate-sqlite"), RESONATOR_TTL="2") as topology:
        topology.server()
        for pid in ("lhs", "rhs"):
            topology.worker("exp", pid)
        ops = topology.worker("ops", "ops", RESONATOR_OP_DELAY="1")
        prompt = topology.prompt("--id", "d", deep)
        ops.wait_for(r"\[d:1\.3\]$")  # so d:1.1.3 and d:1.2.3 had settled
        kill(topology["server"])
        for process in (topology["lhs"], topology["rhs"], ops, prompt):
            process.wait_for("^cannot reach the Resonate server at ")
        topology.server()  # the same port, the same file
        assert prompt.wait_for(VALUE).group(0) == "-32"
        assert prompt.wait_closed() == 0
        runs = operator_runs(topology, "ops")
    assert len(runs) == 7
    assert runs["d:1.1.3"] == runs["d:1.2.3"] == 1, runs


# ── A server that refuses this SDK's ids ────────────────────────────────────


@pytest.fixture
def refusing() -> Iterator[Topology]:
    """resonate 0.9.8, logging every request it receives."""
    with Topology(available("resonate-0.9.8"), RUST_LOG="warn,resonate=info") as topology:
        topology.server()
        yield topology


def received(server: Process) -> list[str]:
    """The kinds of the requests the real server says it received."""
    return re.findall(r"Received request kind=(\S+)", "\n".join(server.lines))


def refused(url: str) -> str:
    return (
        f"resonator: the Resonate server at {url} refuses the promise ids of resonate-sdk 0.8 "
        "(400 Promise ID must be prefixed by resonate:origin): use resonator-devserver, "
        "Resonate on Postgres (resonator-postgres), or a resonate server with the 0.10 id "
        "rule (docs/servers.md)"
    )


def test_a_batch_run_names_a_server_that_refuses_the_sdks_ids_and_exits_1(
    refusing: Topology,
) -> None:
    done = refusing.calculate("1 + 2")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [f"connected to {refusing.url}", refused(refusing.url)]
    # Nothing was started: the check was its only request.
    assert received(refusing["server"]) == ["promise.create"]


def test_a_worker_says_so_once_and_stops_without_keeping_the_server_busy(
    refusing: Topology,
) -> None:
    # Work waits for exp/lhs: a computation whose root is addressed to it.
    async def addressed_to_lhs() -> None:
        resonate, _ = connect(refusing.url, "test", "test", DEFAULT_TTL, Tracer("test"))
        resonate.start()
        try:
            await resonate.options(target="poll://uni@exp/lhs").rpc("spin", "=", ("+", 1, 2)).id()
            # Its last request: once the server has logged it, every request
            # logged from then on is the worker's.
            listening = "Received request kind=promise.register_listener"
            await asyncio.to_thread(refusing["server"].wait_for, listening)
        finally:
            await resonate.stop()

    asyncio.run(addressed_to_lhs())
    before = len(received(refusing["server"]))
    worker = refusing.worker("exp", "lhs", wait=False)
    assert worker.wait_closed() == 1
    said = [line for line in worker.lines if "refuses" in line]
    assert said == [refused(refusing.url) + "; this worker stops"]
    # Before, the worker took the task, was refused, let it go and took it
    # again, four times a second for as long as it ran. Now: its check, and
    # whatever it took before the answer came, then nothing.
    requests = received(refusing["server"])[before:]
    print(f"requests from the worker, in all: {requests}")
    assert requests.count("promise.create") == 1
    assert len(requests) <= 6


# ── The real server's own auth ──────────────────────────────────────────────


def test_the_real_server_lets_in_only_a_token_signed_by_its_key(tmp_path: Path) -> None:
    # docs/machines.md: resonate --auth-publickey, and RESONATE_TOKEN a JWT.
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a key pair and sign a token with")
    key, public = jwt_keys(tmp_path)
    # An empty prefix: every promise id; the token is good for an hour.
    token = signed({"prefix": "", "exp": int(time.time()) + 3600}, key)
    auth = ("--auth-publickey", str(public))
    with Topology(available("resonate"), auth, RESONATE_TOKEN=token) as topology:
        topology.standard()
        done = topology.calculate(ARTICLE)
        assert (done.returncode, done.stdout) == (0, "-3\n")
        other, _ = jwt_keys(tmp_path / "other")
        refused = f"resonator: the Resonate server at {topology.url} refused this process"
        for wrong, said in (
            (signed({"prefix": "", "exp": int(time.time()) + 3600}, other), "'s token"),
            (signed({"prefix": "", "exp": int(time.time()) - 3600}, key), "'s token"),
            ("", ", which has no token"),
        ):
            done = topology.calculate("1 + 2", RESONATE_TOKEN=wrong)
            assert (done.returncode, done.stdout) == (1, "")
            assert done.stderr.splitlines()[-1].startswith(refused + said), done.stderr
