"""A promise tree as a terminal shows it: plain aligned rows, or a live table redrawn as it changes.

``draw`` is ``--tree`` and ``:tree``: one aligned row per promise, easy to
grep. ``show`` is ``--watch`` and ``:watch``: in a terminal the tree is
redrawn in place (with rich); piped (or on a terminal that cannot move its
cursor), a fresh plain snapshot is printed each time the tree changes. It
goes on until the root settles, or until Ctrl-C stops the watching (never
the computation).
"""

from __future__ import annotations

import shutil
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from resonator.client.text import shortened
from resonator.client.trees import rows

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from resonator.client.trees import Node


def draw(root: Node, width: int | None = None) -> str:
    """The tree as plain text, one aligned row per promise (easy to grep).

    Within ``width`` columns, if given: each expression shortened in the middle.
    """
    columns = [cells(name, node) for name, node in rows(root)]
    widths = [max(len(row[i]) for row in columns) for i in range(5)]
    if width and sum(widths) + 2 * 4 > width:
        room = max(width - 2 * 4 - (sum(widths) - widths[1]), 9)
        columns = [[row[0], shortened(row[1], room), *row[2:]] for row in columns]
        widths[1] = max(len(row[1]) for row in columns)
    return "\n".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, [*widths[:4], 0], strict=True)
        ).rstrip()
        for row in columns
    )


def cells(name: str, node: Node) -> list[str]:
    """A node's row: its branch and id, what it computes, where, its state, and its value.

    The last column is a settled node's value; for a pending one, what its
    task is doing.
    """
    last = node.task if node.state == "pending" else str(node.value)
    return [name, node.what, node.where, node.state, last]


# How a terminal that can show colours marks each state, and each task's.
STYLES = {
    "resolved": "green",
    "pending": "yellow",
    "running": "yellow",
    "awaiting": "cyan",
    "unclaimed": "bold white on red",
}


def table(root: Node) -> Table:
    """The tree for a terminal, in the words of ``draw``: settled rows dim, the rest by state."""
    grid = Table.grid(padding=(0, 2))
    for column in range(5):
        # The expressions give way when the terminal is narrow; nothing else does.
        grid.add_column(no_wrap=True, overflow="ellipsis" if column == 1 else "fold")
    for name, node in rows(root):
        row = cells(name, node)
        settled = node.state != "pending"
        last = STYLES.get(node.task, "") if not settled else STYLES.get(node.state, "red")
        grid.add_row(
            Text(row[0], style="dim" if settled else "bold"),
            Text(row[1]),
            Text(row[2], style="dim" if settled else "bold magenta"),
            Text(row[3], style=STYLES.get(node.state, "red")),
            Text(row[4], style=last),
        )
    return grid


async def show(states: AsyncIterator[Node], console: Console) -> Node | None:
    """Show each state as it comes; the last one."""
    last = None
    if console.is_terminal and not console.is_dumb_terminal:
        with Live(console=console, auto_refresh=False) as live:
            async for last in states:
                live.update(table(last), refresh=True)
    else:
        async for last in states:
            console.print(draw(last) + "\n", markup=False, highlight=False, soft_wrap=True)
    return last


async def watch(states: AsyncIterator[Node]) -> bool:
    """``--watch`` and ``:watch``: each state shown on this terminal; True if the root resolved."""
    last = await show(states, Console())
    return last is not None and last.state == "resolved"


def terminal_width() -> int | None:
    """The terminal's width, for a tree drawn to fit it; None when piped."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None
