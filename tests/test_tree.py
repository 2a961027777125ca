"""The promise tree: read back from the server, node for node."""

from __future__ import annotations

import asyncio
import re
import signal
from typing import TYPE_CHECKING

from hypothesis import given, settings

from resonator.client.calculator import promises
from resonator.client.trees import Node, Reader, rows
from resonator.parser import Expr, parse, render
from resonator.terminal.drawing import draw
from tests.helpers import embedded, expressions, oracle

if TYPE_CHECKING:
    from resonator.harness.processes import Topology


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


def test_the_tree_of_nothing_is_one_error_line(topology: Topology) -> None:
    done = topology.calculate("--tree", "--id", "no-such-id")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines()[-1] == "error: there is no promise no-such-id"
