"""Following a computation as it runs: its promise tree, redrawn as it changes.

In a terminal the tree is redrawn in place (with rich); piped (or on a
terminal that cannot move its cursor), a fresh plain snapshot is printed each
time the tree changes. It is read from the server
like ``--tree`` (``promise.get`` by lineage id, and ``task.get``), several
times a second, until the root settles or Ctrl-C stops the watching (never
the computation).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from resonate.error import ApplicationError
from rich.live import Live

from resonator.terminal.tree import draw, table

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator
    from typing import Any

    from rich.console import Console

    from resonator.terminal.tree import Node, Reader

EVERY = 0.2  # seconds between reads


def settled(root: Node) -> bool:
    return root.state != "pending"


def follow(
    reader: Reader,
    id: str,
    wait: Callable[[Coroutine[Any, Any, Node | None]], Node | None],
    until: Callable[[Node], bool] = settled,
) -> Iterator[Node]:
    """Each new state of the tree of ``id``, until ``until`` holds (by default: it settled).

    ``wait`` runs a read on the client's event loop and returns its result.
    """
    shown = None
    while True:
        root = wait(reader.tree(id))
        if root is None:
            raise ApplicationError(f"there is no promise {id}")
        if (text := draw(root)) != shown:
            shown = text
            yield root
        if until(root):
            return
        time.sleep(EVERY)


def flushed(text: str) -> None:
    print(text, flush=True)


def show(
    states: Iterator[Node], console: Console, write: Callable[[str], None] = flushed
) -> Node | None:
    """Show each state as it comes (plain ones through ``write``); the last one."""
    last = None
    if console.is_terminal and not console.is_dumb_terminal:
        with Live(console=console, auto_refresh=False) as live:
            for last in states:
                live.update(table(last), refresh=True)
    else:
        for last in states:
            write(draw(last) + "\n")
    return last
