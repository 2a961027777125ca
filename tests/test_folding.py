"""Big trees folded to fit: no promise lost, the pending part first, the work at the bottom shown.

The trees here are built as the reader would read them, without a server:
every promise's count is checked against the tree itself, an oracle that
shares nothing with the folding but ``Node``.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from typing import TYPE_CHECKING

from hypothesis import given, settings
from hypothesis import strategies as st
from resonate.ids import join_id

from resonator.client.folding import DEEPEST, Fold, fold, lines
from resonator.client.trees import Node, walk
from resonator.parser import Expr, parse
from resonator.terminal.drawing import PIPED, draw
from resonator.web.live import DRAWN, DRAWN_LEVELS, drawn
from tests.helpers import CHAIN, balanced

if TYPE_CHECKING:
    import random

SCREEN = os.terminal_size((100, 30))
SAID = r"2,\d{3} promises, 2,\d{3} settled: folded into \d+ rows"  # above a big tree


def built(expr: Expr, id: str = "c") -> Node:
    """The settled tree ``"="`` leaves for ``expr`` (values left out), built with a stack."""
    root = Node(id, "= ...", "root", "resolved", 0)
    todo = [(expr, root)]
    while todo:
        expr, node = todo.pop()
        if isinstance(expr, tuple):
            op, lhs, rhs = expr
            left = Node(join_id(node.id, "1"), "= ...", "exp/lhs", "resolved", 0)
            right = Node(join_id(node.id, "2"), "= ...", "exp/rhs", "resolved", 0)
            operator = Node(join_id(node.id, "3"), f"{op} 0 0", "ops", "resolved", 0)
            node.children = [left, right, operator]
            todo += [(lhs, left), (rhs, right)]
    return root


def computing(root: Node, done: int) -> Node:
    """The chain under ``root`` as it computes: its ``done`` lowest levels settled, the
    operator above them running, and every level above that waiting for the one below."""
    spine = [root]
    while spine[-1].children:
        spine.append(spine[-1].children[0])
    working = spine[-done - 2]
    operator = working.children[2]
    for node in spine[: -done - 1]:
        node.state, node.task = "pending", "awaiting"
        node.children = node.children[:2]  # its operator is not dispatched yet
    operator.state, operator.task = "pending", "running"
    working.children.append(operator)
    return root


def shown(top: Fold) -> list[tuple[int, Fold]]:
    """(depth, row) for every row."""
    return [(len(branch) // 4, row) for branch, row in lines(top)]


def accounted(top: Fold) -> Counter[str]:
    """Every promise a row has, or counts among those it hides: by how far it is."""
    found: Counter[str] = Counter()
    for _, row in lines(top):
        found += row.hidden
        if row.node:
            found["settled" if row.node.state != "pending" else row.node.task or "pending"] += 1
    return found


def everything(root: Node) -> Counter[str]:
    return Counter("settled" if n.state != "pending" else n.task or "pending" for n in walk(root))


def test_a_tree_that_fits_is_shown_whole() -> None:
    root = built(parse("(1 + 2) * (3 - 4)"))
    top = fold(root, 10)
    assert [row.node for _, row in lines(top)] == list(walk(root))
    assert all(not row.hidden for _, row in lines(top))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=7),
    st.integers(min_value=8, max_value=80),
    st.integers(min_value=2, max_value=12),
    st.randoms(use_true_random=False),
)
def test_a_big_tree_is_folded_into_its_rows_and_loses_no_promise(
    depth: int, room: int, deepest: int, chance: random.Random
) -> None:
    """Any states at all: the folding counts what it hides, whatever the tree says."""
    root = built(parse(balanced(depth)))
    for node in walk(root):  # at random, as a tree that settles in a strange order
        if chance.random() < 0.5:
            node.state = "pending"
            node.task = chance.choice(["running", "awaiting", "unclaimed", ""])
    top = fold(root, room, deepest)
    rows = shown(top)
    assert accounted(top) == everything(root)
    if sum(1 for _ in walk(root)) <= room:
        assert all(not row.hidden for _, row in rows)
    else:
        assert len(rows) <= room
        assert max(level for level, _ in rows) <= deepest


def test_pending_rows_are_unfolded_before_settled_ones() -> None:
    root = built(parse(f"{balanced(6)} + {balanced(6)}"))
    for node in walk(root.children[1]):  # the right operand still computes, the left is done
        node.state, node.task = "pending", "awaiting"
    root.state = "pending"
    rows = [row for _, row in lines(fold(root, 40))]
    left = next(row for row in rows if row.node is root.children[0])
    right = next(row for row in rows if row.node is root.children[1])
    assert left.hidden.total() == 189 and not left.children  # folded: 190 promises, one row
    assert right.children and not right.hidden  # unfolded


def test_a_chain_computing_shows_the_work_at_its_bottom() -> None:
    root = computing(built(parse(CHAIN)), done=40)
    working = next(n for n in walk(root) if n.task == "running")
    top = fold(root, 26)
    rows = [row for _, row in lines(top)]
    # The 950 levels that wait, each for the one below, take one row; the
    # operator at work has its own.
    (run,) = [row for row in rows if row.node is None]
    assert run.levels > 900
    assert working in [row.node for row in rows]
    assert accounted(top) == everything(root)


def test_the_terminal_draws_a_big_tree_within_its_screen_and_piped_within_its_rows() -> None:
    for root in (built(parse(CHAIN)), computing(built(parse(CHAIN)), done=500)):
        on_screen = draw(root, SCREEN).splitlines()
        assert len(on_screen) <= SCREEN.lines - 3
        assert max(map(len, on_screen)) <= SCREEN.columns
        assert re.fullmatch(SAID, on_screen[0])
        piped = draw(root).splitlines()
        assert len(piped) <= PIPED + 1
        assert max(map(len, piped)) < 300  # ids and expressions shortened: the chain's is 3,999


def test_the_page_draws_a_big_tree_in_its_boxes_and_levels() -> None:
    for root in (built(parse(CHAIN)), computing(built(parse(CHAIN)), done=500)):
        page = drawn(root)
        assert re.fullmatch(SAID, page["said"])
        boxes, todo = 0, [(page["root"], 0)]
        while todo:
            row, level = todo.pop()
            boxes += 1
            assert level <= DRAWN_LEVELS
            todo += [(child, level + 1) for child in row["children"]]
        assert boxes <= DRAWN
        json.dumps(page)  # nested no deeper than its levels
    assert DRAWN_LEVELS <= DEEPEST
