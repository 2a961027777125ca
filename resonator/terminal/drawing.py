"""A promise tree as a terminal shows it: plain aligned rows, or a live table redrawn as it changes.

``draw`` is ``--tree`` and ``:tree``: one aligned row per promise, easy to
grep. ``show`` is ``--watch`` and ``:watch``: in a terminal the tree is
redrawn in place (with rich); piped (or on a terminal that cannot move its
cursor), a fresh plain snapshot is printed each time the tree changes. It
goes on until the root settles, or until Ctrl-C stops the watching (never
the computation).

A tree too big for the screen (or, piped, for ``PIPED`` rows) is folded to
fit (``client/folding.py``), with a line above it that says so.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from resonator.client.folding import fold, heading, lines, named, summary
from resonator.client.text import shortened

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from resonator.client.folding import Fold
    from resonator.client.trees import Node

PIPED = 100  # rows of a tree drawn where no screen says how many fit
SPARE = 4  # lines of a screen kept for the line above the tree, and the prompt below it
ROW = 72  # columns of a folded row but its indent: its id, what, where, state, value, count
WHAT = 60  # columns of an expression in a folded tree, piped or not


def draw(root: Node, screen: os.terminal_size | None = None) -> str:
    """The tree as plain text, one aligned row per promise (easy to grep), folded if big.

    On a ``screen``, it fits its height, and each row its width.
    """
    said, columns = fitted(root, screen)
    widths = [max(len(row[i]) for row in columns) for i in range(6)]
    # On a screen, the expressions give way first (shortened in the middle), then what rows hide.
    for column, shorter in ((1, shortened), (5, clipped)):
        # Two spaces before each column up to the last that has anything, empty ones too.
        gaps = 2 * max((i for i, width in enumerate(widths) if width), default=0)
        if screen and (over := sum(widths) + gaps - screen.columns) > 0:
            width = max(widths[column] - over, 9)
            for row in columns:
                row[column] = shorter(row[column], width)
            widths[column] = max(len(row[column]) for row in columns)
    return "\n".join(
        said
        + [
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, [*widths[:5], 0], strict=True)
            ).rstrip()
            for row in columns
        ]
    )


def clipped(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns: its end left out, where an ellipsis stands."""
    return text if len(text) <= width else f"{text[: width - 1]}…"


def fitted(root: Node, screen: os.terminal_size | None) -> tuple[list[str], list[list[str]]]:
    """The rows of the tree on ``screen`` (None: piped), folded if it must be, and a line that
    says so if it was.

    Folded, it has the screen's lines but ``SPARE``, and as many levels as its
    columns can indent.
    """
    if screen:
        rows = fold(root, max(screen.lines - SPARE, 8), max((screen.columns - ROW) // 4, 2))
    else:
        rows = fold(root, PIPED)
    said = heading(root, rows)
    return [said] if said else [], [cells(b, row, bool(said)) for b, row in lines(rows)]


def cells(branch: str, row: Fold, shorter: bool) -> list[str]:
    """A row: its branch and id, what it computes, where, its state, its value, what it hides.

    The fifth cell is a settled promise's value; for a pending one, what its
    task is doing. A run of promises passed over says how many levels it is.
    ``shorter``: long ids and expressions shortened (in a big tree, folded).
    """
    node = row.node
    if node is None:
        return [f"{branch}┆ {row.levels:,} levels", "", "", "", "", summary(row.hidden)]
    id, what = (named(node.id), shortened(node.what, WHAT)) if shorter else (node.id, node.what)
    last = node.task if node.state == "pending" else str(node.value)
    return [branch + id, what, node.where, node.state, last, summary(row.hidden)]


# How a terminal that can show colours marks each state, and each task's.
STYLES = {
    "resolved": "green",
    "pending": "yellow",
    "running": "yellow",
    "awaiting": "cyan",
    "unclaimed": "bold white on red",
}


def table(root: Node, screen: os.terminal_size | None = None) -> Group:
    """The tree for a terminal (of the size of ``screen``), in the words of ``draw``: settled
    rows dim, the rest by state."""
    said, columns = fitted(root, screen)
    grid = Table.grid(padding=(0, 2))
    for column in range(6):
        # The expressions give way when the terminal is narrow; nothing else does.
        grid.add_column(no_wrap=True, overflow="ellipsis" if column in (1, 5) else "fold")
    for row in columns:
        settled = row[3] not in ("pending", "")
        last = STYLES.get(row[4], "") if not settled else STYLES.get(row[3], "red")
        grid.add_row(
            Text(row[0], style="dim" if settled else "bold"),
            Text(row[1], style="" if row[3] else "dim"),
            Text(row[2], style="dim" if settled else "bold magenta"),
            Text(row[3], style=STYLES.get(row[3], "red")),
            Text(row[4], style=last),
            Text(row[5], style="dim"),
        )
    return Group(*(Text(line, style="dim") for line in said), grid)


async def show(states: AsyncIterator[Node], console: Console) -> Node | None:
    """Show each state as it comes; the last one."""
    last = None
    if console.is_terminal and not console.is_dumb_terminal:
        with Live(console=console, auto_refresh=False) as live:
            async for last in states:
                size = os.terminal_size((console.width, console.height))
                live.update(table(last, size), refresh=True)
    else:
        async for last in states:
            console.print(draw(last) + "\n", markup=False, highlight=False, soft_wrap=True)
    return last


async def watch(states: AsyncIterator[Node]) -> bool:
    """``--watch`` and ``:watch``: each state shown on this terminal; True if the root resolved."""
    last = await show(states, Console())
    return last is not None and last.state == "resolved"


def screen() -> os.terminal_size | None:
    """The terminal's size, for a tree drawn to fit it; None when piped."""
    return shutil.get_terminal_size() if sys.stdout.isatty() else None
