"""A pool of ops workers: slots, and a member killed mid-run.

Any number of processes may join the ``ops`` group (``GRP=ops PID=ops3
resonator``); each runs up to ``--slots`` tasks at once. Here each has one
slot, so the work spreads over the pool, and a member is killed with SIGKILL
in the middle of an operator: the others finish the computation, and no
operator that had finished runs again.
"""

from __future__ import annotations

from collections import Counter

import pytest

from resonator.harness.processes import Topology, started
from tests.helpers import VALUE, balanced, kill, oracle

POOL = ("ops1", "ops2", "ops3", "ops4")


def test_a_worker_of_one_slot_takes_one_task_at_a_time() -> None:
    with Topology("stand-in") as topology:
        topology.server()
        for pid in ("lhs", "rhs"):
            topology.worker("exp", pid)
        ops = topology.worker("ops", "ops", RESONATOR_SLOTS="1", RESONATOR_OP_DELAY="3")
        first = topology.prompt("--id", "a", "1 + 2", name="a")
        second = topology.prompt("--id", "b", "3 + 4", name="b")
        running = ops.wait_for(r"^ops/ops: \+ [13] [24]  \[(a|b):3\]$").group(1)
        waiting = "b" if running == "a" else "a"
        tree = topology.calculate("--tree", "--id", waiting)
        assert tree.returncode == 0, tree.stderr
        row = [line for line in tree.stdout.splitlines() if f"{waiting}:3 " in line]
        # The one slot is busy: the other operator waits for it, not taken.
        assert row and row[0].split()[-3:] == ["ops", "pending", "unclaimed"], tree.stdout
        assert first.wait_for(VALUE).group(0) == "3"
        assert second.wait_for(VALUE).group(0) == "7"


@pytest.mark.parametrize("server", ["stand-in", "postgres", "resonate"], indirect=True)
def test_a_pool_of_four_loses_a_member_mid_run_and_finishes(server: str) -> None:
    text = balanced(5)  # 31 operators
    # Short leases, so the operator the killed member held is handed on soon.
    with Topology(server, RESONATOR_TTL="3") as topology:
        topology.server()
        for pid in ("lhs", "rhs"):
            topology.worker("exp", pid)
        pool = [
            topology.worker("ops", pid, wait=False, RESONATOR_SLOTS="1", RESONATOR_OP_DELAY="0.5")
            for pid in POOL
        ]
        for process in pool:
            started(process, "ops", process.name)
        prompt = topology.prompt("--id", "p", text)
        # Its second operator: the first had finished, since it has one slot.
        ops2 = topology["ops2"]
        ops2.wait_for(r"^ops/ops2: ")
        first = next(i for i, line in enumerate(ops2.lines) if line.startswith("ops/ops2: "))
        ops2.wait_for(r"^ops/ops2: ", after=first + 1)
        kill(ops2)
        assert prompt.wait_for(VALUE).group(0) == str(oracle(text))
        assert prompt.wait_closed() == 0
        runs = Counter(t["id"] for t in topology.traces(*POOL))
        held = [t["id"] for t in ops2.traces()][-1]  # mid-way when killed
    assert len(runs) == 31
    # Every operator ran once, but the one the killed member was running.
    assert {id: n for id, n in runs.items() if n != 1 and id != held} == {}
    assert runs[held] in (1, 2)
