"""A pool of ops workers: slots, and a member killed mid-run.

Any number of processes may join the ``ops`` group (``GRP=ops PID=ops3
resonator``); each runs up to ``--slots`` tasks at once. Here each has one
slot, so the work spreads over the pool, and a member is killed with SIGKILL
in the middle of an operator: the others finish the computation, and no
operator that had finished runs again.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from resonate.resonate import DEFAULT_TTL

from resonator.client.trees import EVERY, Node, Reader, parent_of, walk
from resonator.connections import shut_down
from resonator.harness.processes import WAIT, Topology, started
from resonator.resonator import connect
from resonator.trace import Tracer
from tests.helpers import VALUE, balanced, kill, oracle

POOL = ("ops1", "ops2", "ops3", "ops4")


def test_a_worker_of_one_slot_takes_one_task_at_a_time() -> None:
    with Topology("stand-in") as topology:
        topology.server()
        for pid in ("lhs", "rhs"):
            topology.worker("exp", pid)
        ops = topology.worker("ops", "ops", RESONATOR_SLOTS="1", RESONATOR_OP_DELAY="10")
        first = topology.prompt("--id", "a", "1 + 2", name="a")
        second = topology.prompt("--id", "b", "3 + 4", name="b")
        running = ops.wait_for(r"^ops/ops: \+ [13] [24]  \[(a|b):3\]$").group(1)
        waiting = "b" if running == "a" else "a"
        # Read in this process, while the one slot is busy (ten seconds): the
        # other operator, once sent, waits for it, not taken.
        busy, other = asyncio.run(operators(topology.url, f"{running}:3", f"{waiting}:3"))
        assert (busy.state, busy.task) == ("pending", "running")
        assert (other.state, other.task) == ("pending", "unclaimed")
        assert first.wait_for(VALUE).group(0) == "3"
        assert second.wait_for(VALUE).group(0) == "7"


async def operators(url: str, busy: str, other: str) -> tuple[Node, Node]:
    """The promises ``busy`` and ``other``, read once ``other`` exists (busy's first)."""
    resonate, connection = connect(url, "prompt", "reader", DEFAULT_TTL, Tracer("reader"))
    resonate.start()
    try:
        reader = Reader(connection)
        async with asyncio.timeout(WAIT):
            while True:
                found = {
                    node.id: node
                    for root in (parent_of(busy), parent_of(other))
                    if (tree := await reader.tree(root))
                    for node in walk(tree)
                }
                if other in found:
                    return found[busy], found[other]
                await asyncio.sleep(EVERY)
    finally:
        await shut_down(resonate)


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
