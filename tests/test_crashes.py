"""The article's failure modes, each a real process killed mid-computation.

Every test runs two-second task leases and operators that take a second, so a
computation is still open when the kill lands. The article's three failure
modes run on the stand-in and on Postgres (when RESONATE_PG_SQL names
resonate.sql); the rest on the stand-in, with ``-v`` (it then logs each
message it could not deliver). Kill points are trace lines, never timers;
``Process.signal`` logs what it killed and when.
"""

from __future__ import annotations

import contextlib
import re
import signal
import urllib.request
from typing import TYPE_CHECKING

import pytest

from resonator.harness.processes import WAIT, Topology, free_port, started
from tests.helpers import (
    ARTICLE,
    VALUE,
    an_exp_worker_dies,
    available,
    kill,
    leased,
    operator_runs,
    the_ops_worker_dies,
    the_prompt_dies,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

DEEP = "((1 + 2) * (3 - 4)) - ((5 * 6) + (7 - 8))"  # = -32, seven operators
DEEP_OPERATORS = {"s:1.1.3", "s:1.2.3", "s:1.3", "s:2.1.3", "s:2.2.3", "s:2.3", "s:3"}


@pytest.fixture
def slow() -> Iterator[Topology]:
    with Topology(server_args=("-v",), RESONATOR_TTL="2") as topology:
        yield leased(topology)


@pytest.fixture(params=["stand-in", "postgres", "resonate"])
def either(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """The same, on the stand-in, on Postgres and on the real server."""
    with Topology(available(request.param), RESONATOR_TTL="2") as topology:
        yield leased(topology)


def test_1_an_exp_worker_dies_and_its_work_waits_for_the_same_pid(either: Topology) -> None:
    an_exp_worker_dies(either, "s")


def test_2_the_prompt_dies_and_a_new_one_attaches(either: Topology) -> None:
    the_prompt_dies(either, "s")


def test_3_the_ops_worker_dies_mid_operation(either: Topology) -> None:
    the_ops_worker_dies(either, "s")


def test_4_replay_never_repeats_finished_work(slow: Topology) -> None:
    prompt = slow.prompt("--id", "s", DEEP)
    slow["ops"].wait_for(r"\[s:\S+\.3\]$")
    kill(slow["ops"])
    unsettled = set(operator_runs(slow, "ops"))  # all started within the last second
    slow.worker("ops", "another", RESONATOR_OP_DELAY="1")
    assert prompt.wait_for(VALUE).group(0) == "-32"
    runs = operator_runs(slow, "ops", "another")
    print(f"operator runs per promise: {dict(runs)}; died unsettled: {sorted(unsettled)}")
    assert set(runs) == DEEP_OPERATORS
    assert {id for id, n in runs.items() if n == 2} == unsettled
    assert max(runs.values()) == 2


def test_5_a_worker_leaves_the_pool_and_the_survivor_serves_the_rest(slow: Topology) -> None:
    slow.worker("ops", "survivor", RESONATOR_OP_DELAY="1")
    prompt = slow.prompt("--id", "s", DEEP)
    # Anycast takes turns, so both ops workers get a leaf operation.
    slow["ops"].wait_for(r"\[s:")
    slow["survivor"].wait_for(r"\[s:")
    kill(slow["ops"])
    assert prompt.wait_for(VALUE).group(0) == "-32"
    dead, survivor = operator_runs(slow, "ops"), operator_runs(slow, "survivor")
    assert set(dead) <= set(survivor), "an operation of the dead worker was lost"
    assert set(survivor) | set(dead) == DEEP_OPERATORS


def test_6_the_same_id_twice_is_one_computation(slow: Topology) -> None:
    both = [slow.prompt("--id", "s", ARTICLE, name=name) for name in ("a", "b")]
    assert [p.wait_for(VALUE).group(0) for p in both] == ["-3", "-3"]
    assert operator_runs(slow, "ops") == {"s:1.3": 1, "s:2.3": 1, "s:3": 1}
    lines = len(slow["ops"].lines)
    later = slow.calculate("--id", "s", ARTICLE)
    assert (later.returncode, later.stdout) == (0, "-3\n")
    assert len(slow["ops"].lines) == lines


def test_7_the_server_restarts_and_everyone_reconnects(slow: Topology) -> None:
    prompt = slow.prompt(name="prompt", stdin=True)
    prompt.wait_for(f"^connected to {slow.url}$")
    prompt.wait_for(VALUE, after=prompt.send("1 + 2"))
    everyone = ("lhs", "rhs", "ops", "prompt")
    marks = {name: len(slow[name].lines) for name in everyone}
    kill(slow["server"])
    for name in everyone[:3]:
        slow[name].wait_for("^cannot reach the Resonate server", after=marks[name])
    slow.server()  # same port, empty memory
    for name in everyone:
        slow[name].wait_for(f"^connected to {slow.url}$", after=marks[name])
    assert prompt.wait_for(VALUE, after=prompt.send(ARTICLE)).group(0) == "-3"


def test_8_a_worker_started_before_the_server_waits_for_it_and_connects_when_it_appears() -> None:
    with Topology() as topology:
        topology.port = free_port()
        topology.url = f"http://127.0.0.1:{topology.port}"
        worker = topology.worker("exp", "lhs", wait=False)
        # At first, as under honcho, the server may be starting too ...
        url = re.escape(topology.url)
        worker.wait_for(rf"^waiting for the Resonate server at {url} \(connection refused\)$")
        # ... but a few seconds on, it is not there, and the worker says so, once.
        worker.wait_for(
            rf"^cannot reach the Resonate server at {url} \(connection refused\); retrying$"
        )
        topology.server()
        started(worker, "exp", "lhs")
        assert sum("cannot reach" in line for line in worker.lines) == 1
        assert f"connected to {topology.url}" in worker.lines


def test_8_a_worker_whose_server_appears_within_seconds_only_waits_for_it() -> None:
    with Topology() as topology:
        topology.port = free_port()
        topology.url = f"http://127.0.0.1:{topology.port}"
        worker = topology.worker("exp", "lhs", wait=False)
        worker.wait_for(r"^waiting for the Resonate server at ")
        topology.server()
        started(worker, "exp", "lhs")
        assert not any("cannot reach" in line for line in worker.lines), worker.lines


def test_9_a_prompt_hears_at_once_that_a_restarted_server_forgot_its_computation(
    slow: Topology,
) -> None:
    kill(slow["lhs"])  # so that the computation is still waiting
    prompt = slow.prompt("--id", "forgotten", ARTICLE)
    slow["rhs"].wait_for(r"\[forgotten:2\]$")
    kill(slow["server"])
    slow.server()  # same port, empty memory
    # Well before the SDK's own check, once a minute.
    prompt.wait_for("^error: the server no longer has computation forgotten", timeout=15)
    assert prompt.wait_closed() == 1


@pytest.mark.parametrize("kind", ["stand-in", "postgres", "resonate-sqlite"])
def test_a_computation_that_settled_while_its_prompt_was_away_is_printed(kind: str) -> None:
    # The prompt is stopped, and its channel broken, as its operator runs;
    # the computation settles while it is away. Once it runs again it
    # reconnects and reads the root, resolved: it took the record's value,
    # still encoded, for no number, and said "computation away ended resolved".
    with Topology(available(kind)) as topology:
        leased(topology)  # operators take a second
        prompt = topology.prompt("--id", "away", "1 + 2", PID="away")
        topology["ops"].wait_for(r"^ops/ops: \+ 1 2  \[away:3\]$")
        prompt.signal(signal.SIGSTOP)
        with contextlib.ExitStack() as away:
            if kind == "stand-in":
                # Another stream for the prompt's address takes its place:
                # the stand-in ends the prompt's, and this one hears the news.
                stream = urllib.request.urlopen(f"{topology.url}/poll/prompt/away", timeout=WAIT)
                away.enter_context(stream)
            else:
                kill(topology["server"])  # and started again, on its files
                topology.server()
            again = topology.calculate("--id", "away", "1 + 2")  # which attaches, and waits
            assert (again.returncode, again.stdout) == (0, "3\n"), again.stderr
        prompt.signal(signal.SIGCONT)
        assert prompt.wait_for(VALUE).group(0) == "3"
        assert prompt.wait_closed() == 0


@pytest.mark.parametrize("kind", ["stand-in", "postgres", "resonate"])
def test_10_a_worker_that_work_waits_for_says_it_started_before_it_runs_any(kind: str) -> None:
    with Topology(available(kind), RESONATOR_TTL="2") as topology:
        leased(topology)
        prompt = topology.prompt("--id", "s", DEEP)
        topology["ops"].wait_for(r"\[s:\S+\.3\]$")
        kill(topology["ops"])
        # Once the second number of each pair is in, the operators of all four
        # pairs wait for an ops worker (or are about to).
        for pair in ("1.1", "1.2", "2.1", "2.2"):
            topology["rhs"].wait_for(rf"\[s:{pair}\.2\]$")
        another = topology.worker("ops", "another", wait=False)
        assert prompt.wait_for(VALUE).group(0) == "-32"
        said = [line for line in another.lines if not line.startswith("connected to ")]
        assert re.match(r"worker started: group=ops pid=another ", said[0]), said
