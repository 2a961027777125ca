"""The promise tree: read back from the server, node for node."""

from __future__ import annotations

import asyncio
import re
import signal
from typing import TYPE_CHECKING

from hypothesis import given, settings
from resonate.resonate import DEFAULT_TTL
from resonate.types import Value

from resonator.client.calculator import promises
from resonator.client.trees import EVERY, READS, Node, Reader, changes, rows, walk
from resonator.connections import shut_down
from resonator.harness.processes import WAIT, Topology
from resonator.parser import Expr, parse, render
from resonator.resonator import connect
from resonator.terminal.drawing import draw
from resonator.trace import Tracer
from tests.helpers import VALUE, embedded, expressions, kill, oracle

if TYPE_CHECKING:
    from resonate.types import PromiseRecord


def expected(expr: Expr, id: str, where: str) -> Node:
    """The node ``"="`` must leave behind for ``expr``, built from the parse alone."""
    node = Node(id, f"= {render(expr)}", where, "resolved", oracle(render(expr)))
    match expr:
        case (op, lhs, rhs):
            sep = "." if ":" in id else ":"
            node.children = [
                expected(lhs, f"{id}{sep}1", "exp/lhs"),
                expected(rhs, f"{id}{sep}2", "exp/rhs"),
                Node(
                    f"{id}{sep}3",
                    f"{op} {oracle(render(lhs))} {oracle(render(rhs))}",
                    "ops",
                    "resolved",
                    node.value,
                ),
            ]
    return node


async def computed_tree(text: str) -> Node | None:
    async with embedded() as (resonate, connection):
        await resonate.run("calc", "=", parse(text)).result()
        return await Reader(connection).tree("calc")


def test_the_articles_tree_has_ten_nodes_with_their_values() -> None:
    tree = asyncio.run(computed_tree("(1 + 2) * (3 - 4)"))
    assert tree == expected(parse("(1 + 2) * (3 - 4)"), "calc", "root")
    assert draw(tree).splitlines() == [
        "calc              = (1 + 2) * (3 - 4)  root     resolved  -3",
        "├── calc:1        = 1 + 2              exp/lhs  resolved  3",
        "│   ├── calc:1.1  = 1                  exp/lhs  resolved  1",
        "│   ├── calc:1.2  = 2                  exp/rhs  resolved  2",
        "│   └── calc:1.3  + 1 2                ops      resolved  3",
        "├── calc:2        = 3 - 4              exp/rhs  resolved  -1",
        "│   ├── calc:2.1  = 3                  exp/lhs  resolved  3",
        "│   ├── calc:2.2  = 4                  exp/rhs  resolved  4",
        "│   └── calc:2.3  - 3 4                ops      resolved  -1",
        "└── calc:3        * 3 -1               ops      resolved  -3",
    ]


@settings(max_examples=25, deadline=None)
@given(expressions)
def test_every_tree_matches_its_expression(expr: Expr) -> None:
    tree = asyncio.run(computed_tree(render(expr)))
    assert tree == expected(expr, "calc", "root")
    # All the promises the prompt's progress counts on, before there are any.
    assert tree is not None
    assert len(rows(tree)) == promises(expr)


def test_the_promises_of_an_expression_nested_as_deep_as_allowed_are_counted() -> None:
    # 1,000 operators deep: deeper than Python recurses.
    assert promises(parse("+".join(["1"] * 1001))) == 3 * 1000 + 1


def test_an_unknown_id_has_no_tree() -> None:
    async def scenario() -> Node | None:
        async with embedded() as (_, connection):
            return await Reader(connection).tree("nothing")

    assert asyncio.run(scenario()) is None


def test_the_tree_shows_where_a_computation_waits_for_a_dead_worker(
    topology: Topology,
) -> None:
    topology["lhs"].signal(signal.SIGKILL)
    topology["lhs"].wait_closed()
    prompt = topology.prompt("--id", "held", "(1 + 2) * (3 - 4)")
    # exp/rhs has run what it was given; everything else waits for exp/lhs.
    topology["rhs"].wait_for(r"= 4  \[held:2\.2\]")
    shown = topology.calculate("--tree", "--id", "held")
    assert shown.returncode == 0, shown.stderr
    rows = {
        re.sub(r"^[│├└─ ]+", "", row).split()[0]: row.split() for row in shown.stdout.splitlines()
    }
    # Work sent to exp/lhs is "unclaimed": nobody is there to take it. The
    # steps above it await their operands (or are about to).
    assert rows["held"][-2] == "pending"
    assert rows["held"][-1] in ("running", "awaiting")
    assert rows["held:1"][-3:] == ["exp/lhs", "pending", "unclaimed"]
    assert rows["held:2"][-3:-1] == ["exp/rhs", "pending"]
    assert rows["held:2"][-1] in ("running", "awaiting")
    assert rows["held:2.1"][-3:] == ["exp/lhs", "pending", "unclaimed"]
    assert rows["held:2.2"][-3:] == ["exp/rhs", "resolved", "4"]
    assert "held:1.1" not in rows  # exp/lhs never got to dispatch it
    assert prompt.popen.poll() is None
    topology.worker("exp", "lhs")
    assert prompt.wait_for(r"^-?\d+$").group(0) == "-3"


def test_a_followed_tree_reads_what_may_change_a_few_at_a_time_and_ends_as_a_fresh_read(
    server: str,
) -> None:
    text = "((1 + 2) * (3 - 4)) - ((5 + 6) * (7 - 8))"  # 22 promises
    with Topology(server, RESONATOR_OP_DELAY="0.3") as topology:
        topology.standard()
        prompt = topology.prompt("--id", "f", text)
        states, fresh, reads = asyncio.run(followed(topology.url, "f"))
        assert prompt.wait_for(VALUE).group(0) == str(oracle(text))
    assert len(states) >= 2  # it saw the tree change
    for root in states:  # each state whole: nothing pending under a promise that settled
        for node in walk(root):
            if node.state != "pending":
                assert all(child.state != "pending" for child in walk(node)), node.id
    assert states[-1] == fresh == expected(parse(text), "f", "root")
    most, first, again = reads
    assert 1 < most <= READS
    assert first == 22  # a fresh read: each promise once
    assert again == 0  # and a settled tree is never read again


def test_a_chain_that_unwinds_between_two_reads_is_read_up_in_one() -> None:
    # A spine of "=" promises, c, c:1, c:1.1..., each awaiting the one below:
    # a chain of additions as its left operands are computed. Between two
    # reads, all but the root settle, bottom first, as a server unwinds it.
    spine = ["c", *(f"c:{'.'.join(['1'] * n)}" for n in range(1, 7))]

    async def scenario() -> tuple[Node | None, Node | None]:
        async with embedded() as (_, connection):
            reader = Reader(connection)
            expr: Expr = 1
            for _ in spine:
                expr = ("+", expr, 1)
            for id in spine:
                call = {"func": "=", "args": [expr]}
                await reader.promises.create(id, 2**53, Value(data=call), {})
                expr = expr[1] if isinstance(expr, tuple) else expr
            before = await reader.tree("c")
            for id in reversed(spine[1:]):
                await reader.promises.resolve(id, Value(data=1))
            return before, await reader.tree("c")

    before, after = asyncio.run(scenario())
    assert before and after
    assert [node.state for node in walk(before)] == ["pending"] * len(spine)
    assert [node.state for node in walk(after)] == ["pending"] + ["resolved"] * (len(spine) - 1)


def test_a_tree_the_restarted_server_forgot_is_no_tree() -> None:
    with Topology("stand-in") as topology:
        topology.server()

        async def scenario() -> tuple[Node | None, Node | None]:
            resonate, connection = connect(
                topology.url, "prompt", "reader", DEFAULT_TTL, Tracer("reader")
            )
            resonate.start()
            try:
                reader = Reader(connection)
                call = Value(data={"func": "=", "args": [["+", 1, 2]]})
                await reader.promises.create("gone", 2**53, call, {})
                before = await reader.tree("gone")
                kill(topology["server"])
                await asyncio.to_thread(topology.server)  # the same port, empty memory
                return before, await reader.tree("gone")
            finally:
                await shut_down(resonate)

        before, after = asyncio.run(scenario())
    assert before is not None and before.state == "pending"
    assert after is None  # not the tree read before, pending for ever


async def followed(url: str, id: str) -> tuple[list[Node], Node | None, tuple[int, int, int]]:
    """Each state of the tree of ``id`` as followed; the tree as a fresh reader reads it; and
    (the most promise reads at once, those of the fresh read, those of one read more)."""
    resonate, connection = connect(url, "prompt", "reader", DEFAULT_TTL, Tracer("reader"))
    resonate.start()
    try:
        reader = Reader(connection)
        async with asyncio.timeout(WAIT):
            while await reader.tree(id) is None:  # the prompt has yet to start it
                await asyncio.sleep(EVERY)
            states = [root async for root in changes(reader, id)]
        again = Reader(connection)
        count = counting(again)
        fresh = await again.tree(id)
        first = count[1]
        await again.tree(id)
        return states, fresh, (count[0], first, count[1] - first)
    finally:
        await shut_down(resonate)


def counting(reader: Reader) -> list[int]:
    """[the most promise reads in flight at once, how many so far] of ``reader``, as it reads."""
    count, now = [0, 0], [0]
    get = reader.promises.get

    async def counted(id: str) -> PromiseRecord:
        now[0] += 1
        count[0], count[1] = max(count[0], now[0]), count[1] + 1
        try:
            return await get(id)
        finally:
            now[0] -= 1

    reader.promises.get = counted  # type: ignore[method-assign]
    return count


def test_the_tree_of_nothing_is_one_error_line(topology: Topology) -> None:
    done = topology.calculate("--tree", "--id", "no-such-id")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines()[-1] == "error: there is no promise no-such-id"
