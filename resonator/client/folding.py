"""A big promise tree in a few rows: what the terminal and the page show of it.

A tree of at most ``room`` promises is shown whole, a row for each promise,
as ``--tree`` draws the article's ten. A bigger one is folded to fit:

- a promise's row may stand for the whole subtree under it, folded: the row
  says how many promises it hides, and how far they are ("+765 folded", or
  "+93 folded: 60 settled, 20 unclaimed, 13 awaiting");
- rows are unfolded from the top down, pending promises before settled ones,
  so what is still being computed shows before what is done;
- a run of pending promises each waiting for the one below it (a chain such
  as ``1 + 1 + ... + 1`` as it computes: 999 of them) is passed over in one
  row, so that the work at the bottom of a deep tree shows too.

Nothing is left out without a word: every promise has a row, or is counted
in one.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from resonate.ids import LINEAGE_SEP, ORIGIN_SEP

from resonator.client.trees import tally, walk

if TYPE_CHECKING:
    from resonator.client.trees import Node

DEEPEST = 12  # levels of rows unfolded at most: each is a few columns of indent
RUN = 3  # pending promises in a row, each waiting for the next, that are passed over
ID = 20  # columns of an id beyond which a folded tree shortens it (2 columns a level)
HOW_FAR = ("settled", "running", "unclaimed", "awaiting", "pending")  # in the words of a count


@dataclass
class Fold:
    """A row of a folded tree: a promise, or a run of levels passed over; and the rows under it."""

    node: Node | None  # None: ``levels`` promises passed over, each awaiting the next
    hidden: Counter[str]  # the promises it stands for that have no row of their own, by how far
    children: list[Fold] = field(default_factory=list)
    levels: int = 0


def fold(root: Node, room: int, deepest: int = DEEPEST) -> Fold:
    """The tree under ``root`` in at most ``room`` rows (and ``deepest`` levels below the root)."""
    everything = list(walk(root))
    if len(everything) <= room:
        return whole(root)
    under = counts(everything)
    top = folded(root, under)
    used, order = 1, itertools.count()
    # Rows to unfold, pending first, then the shallowest, then in order.
    todo = [(root.state != "pending", 0, next(order), top)]
    while todo:
        _, depth, _, row = heapq.heappop(todo)
        assert row.node is not None
        runs = [passed_over(child) for child in row.node.children]
        cost = len(runs) + sum(1 for run in runs if run)  # a run's row, and the promise below it
        if used + cost > room or depth + (2 if any(runs) else 1) > deepest:
            continue  # left folded; a smaller one may still fit
        used += cost
        row.hidden = Counter()
        for child, run in zip(row.node.children, runs, strict=True):
            shown = folded(run[-1] if run else child, under)
            if run:  # the run's row stands for all of it but its last promise
                skipped = under[child.id] - under[run[-1].id]
                row.children.append(Fold(None, skipped, [shown], len(run) - 1))
            else:
                row.children.append(shown)
            if shown.node and shown.node.children:
                below = depth + (2 if run else 1)
                heapq.heappush(todo, (shown.node.state != "pending", below, next(order), shown))
    return top


def whole(root: Node) -> Fold:
    """Every promise a row of its own."""
    top = Fold(root, Counter())
    todo = [top]
    while todo:  # a stack: no recursion, however deep
        row = todo.pop()
        assert row.node is not None
        row.children = [Fold(child, Counter()) for child in row.node.children]
        todo += row.children
    return top


def folded(node: Node, under: dict[str, Counter[str]]) -> Fold:
    """``node``'s row, standing for every promise under it."""
    return Fold(node, under[node.id] - Counter([how_far(node)]))


def counts(everything: list[Node]) -> dict[str, Counter[str]]:
    """For each promise, how far those of its subtree (itself included) are."""
    under: dict[str, Counter[str]] = {}
    for node in reversed(everything):  # depth first from the root: children come after parents
        under[node.id] = Counter([how_far(node)])
        for child in node.children:
            under[node.id] += under[child.id]
    return under


def how_far(node: Node) -> str:
    return "settled" if node.state != "pending" else node.task or "pending"


def passed_over(node: Node) -> list[Node]:
    """The run that starts at ``node``, if it is long enough to pass over; else none.

    A run is pending promises each waiting for a single pending child, the
    next. Its last one keeps a row, with the promises under it: that is
    where the run's work is.
    """
    run = []
    while node.state == "pending":
        waiting = [child for child in node.children if child.state == "pending"]
        if len(waiting) != 1:
            break
        run.append(node)
        node = waiting[0]
    return run if len(run) >= RUN else []


def summary(hidden: Counter[str]) -> str:
    """What a row hides: "+765 folded", "+93 folded: 60 settled, 20 unclaimed, 13 awaiting"."""
    total = hidden.total()
    if not total:
        return ""
    if hidden["settled"] == total:
        return f"+{total:,} folded"
    return f"+{total:,} folded: " + ", ".join(
        f"{hidden[far]:,} {far}" for far in HOW_FAR if hidden[far]
    )


def lines(top: Fold) -> list[tuple[str, Fold]]:
    """(the branch lines in front of it, row) for every row, top to bottom."""
    found: list[tuple[str, Fold]] = []
    todo = [(top, "", "")]
    while todo:  # (row, the lines in front of its children's, the branch in front of it)
        row, lead, branch = todo.pop()
        found.append((branch, row))
        last = len(row.children) - 1
        for i, child in reversed(list(enumerate(row.children))):
            below = lead + ("    " if i == last else "│   ")
            todo.append((child, below, lead + ("└── " if i == last else "├── ")))
    return found


def heading(root: Node, top: Fold) -> str:
    """A line that says how the tree was folded, above it; none ("") for a tree shown whole."""
    shown = lines(top)
    if all(not row.hidden for _, row in shown):
        return ""
    settled, created = tally(root)
    return f"{created:,} promises, {settled:,} settled: folded into {len(shown)} rows"


def named(id: str) -> str:
    """A deep promise's id in few columns: ``c:1.1.[795 more].1.1.3``.

    (Deep ids differ in their length more than in their ends.)
    """
    origin, _, lineage = id.partition(ORIGIN_SEP)
    steps = lineage.split(LINEAGE_SEP)
    if len(id) <= ID or len(steps) < 6:
        return id
    more = f"[{len(steps) - 5} more]"
    return f"{origin}{ORIGIN_SEP}{LINEAGE_SEP.join([*steps[:2], more, *steps[-3:]])}"
