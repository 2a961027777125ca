"""Following a computation as it runs: its promise tree, redrawn as it changes.

In a terminal the tree is redrawn in place (with rich); piped (or on a
terminal that cannot move its cursor), a fresh plain snapshot is printed each
time the tree changes. It is read from the server like ``--tree``
(``promise.get`` by lineage id, and ``task.get``) five times a second: no
message tells a process that another one's promise changed. It goes on until
the root settles, or until Ctrl-C stops the watching (never the computation).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from resonate.error import ApplicationError
from rich.live import Live

from resonator.terminal.tree import draw, table

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

    from rich.console import Console

    from resonator.terminal.tree import Node, Reader

EVERY = 0.2  # seconds between reads


def ended(root: Node) -> bool:
    """The computation ended: its root settled."""
    return root.state != "pending"


async def changes(reader: Reader, id: str) -> AsyncGenerator[Node]:
    """Each new state of the tree of ``id``, until its root settles."""
    shown = None
    while True:
        root = await reader.tree(id)
        if root is None:
            raise ApplicationError(f"there is no promise {id}")
        if (text := draw(root)) != shown:
            shown = text
            yield root
        if ended(root):
            return
        await asyncio.sleep(EVERY)


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
