"""What the page shows, kept as its latest state, and the trees read for it from the server.

Each thing the page shows is a *part* of a ``Board``: its latest value, with
the version at which it last changed. A stream to the page sends every part
when it opens, then each part that changes; one that falls behind skips to the
latest state, so a slow page costs no memory, and one that reconnects is
whole again at once. Nothing is kept that the page does not show: the
computations listed (``LISTED`` at most), and the tree of each computation that
somebody watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from resonator.client.trees import changes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from resonator.client.trees import Node, Reader

log = logging.getLogger("resonator")

LISTED = 50  # computations listed; the oldest are forgotten first
AGAIN = 1.0  # seconds before a tree that could not be read is read again
# Levels of promises the page draws. Its tree nests in JSON two levels a
# promise (a node, its children), and both ``shape`` and the encoder recurse:
# an expression may be 1,000 deep, which neither would survive.
DRAWN_DEPTH = 500


class Board:
    """The latest value of each part, and a wake-up for whoever waits for a change."""

    def __init__(self) -> None:
        self.parts: dict[str, Any] = {}
        self.versions: dict[str, int] = {}
        self.version = 0
        self.changed = asyncio.Event()

    def put(self, name: str, value: Any) -> None:
        """Make ``value`` the latest of part ``name`` (nothing changes if it already was)."""
        if name in self.parts and self.parts[name] == value:
            return
        self.version += 1
        self.parts[name] = value
        self.versions[name] = self.version
        # Everyone waiting holds this event; later waiters get a new one.
        self.changed.set()
        self.changed = asyncio.Event()

    async def since(self, seen: int) -> tuple[int, dict[str, Any]]:
        """The parts changed after version ``seen`` (once there is one), and the version now."""
        while self.version <= seen:
            await self.changed.wait()
        changed = {name: self.parts[name] for name, v in self.versions.items() if v > seen}
        return self.version, changed


# ── The trees ───────────────────────────────────────────────────────────────


def drawn(root: Node) -> dict[str, Any]:
    """The tree as the page draws it, or one line saying that it is too deep to draw here."""
    deepest, todo = 0, [(root, 1)]
    while todo:  # a stack: the tree may be deeper than Python recurses
        node, level = todo.pop()
        deepest = max(deepest, level)
        todo += [(child, level + 1) for child in node.children]
    if deepest > DRAWN_DEPTH:
        return {
            "error": f"this tree is {deepest} promises deep; the page draws {DRAWN_DEPTH} at "
            f"most (resonator --tree --id {root.id} shows it)"
        }
    return shape(root)


def shape(node: Node) -> dict[str, Any]:
    """A node as the page draws it: its state in the terminal tree's words, its value as text.

    (As text: a value can have more digits than a JavaScript number holds.)
    """
    pending = node.state == "pending"
    return {
        "id": node.id,
        "what": node.what,
        "where": node.where,
        "state": (node.task or "pending") if pending else node.state,
        "value": str(node.value) if node.state == "resolved" else "",
        "children": [shape(child) for child in node.children],
    }


@dataclass
class Tree:
    """One computation's tree, as last read, and who watches it."""

    id: str
    board: Board = field(default_factory=Board)  # its one part, "tree"
    root: Node | None = None
    watchers: int = 0
    reading: asyncio.Task[None] | None = None


class Trees:
    """The trees somebody watches, each read by one reader for all its watchers.

    A tree is read as ``:watch`` reads it (``watch.changes``: the unsettled
    part, five times a second) from the moment its first watcher comes until
    its root settles, or until its last watcher leaves; then it is forgotten.
    So a page that closes costs the Resonate server nothing more.
    """

    def __init__(self, reader: Callable[[], Reader], seen: Callable[[Node], None]) -> None:
        self.reader = reader  # makes a reader that remembers nothing yet
        self.seen = seen  # told each new state of every tree
        self.trees: dict[str, Tree] = {}

    @contextlib.asynccontextmanager
    async def watch(self, id: str) -> AsyncIterator[Tree]:
        """The tree of ``id``, read for as long as this (or another) watch lasts."""
        tree = self.trees.setdefault(id, Tree(id))
        tree.watchers += 1
        if tree.reading is None:
            tree.reading = asyncio.create_task(self.read(tree))
        try:
            yield tree
        finally:
            tree.watchers -= 1
            if tree.watchers == 0:
                tree.reading.cancel()
                del self.trees[id]

    async def until(self, id: str, holds: Callable[[Node], bool]) -> Node:
        """The first state of the tree of ``id`` for which ``holds`` is true."""
        async with self.watch(id) as tree:
            seen = 0
            while tree.root is None or not holds(tree.root):
                seen, _ = await tree.board.since(seen)
            return tree.root

    async def read(self, tree: Tree) -> None:
        reader = self.reader()
        while True:
            try:
                async for root in changes(reader, tree.id):
                    tree.root = root
                    tree.board.put("tree", drawn(root))
                    self.seen(root)
                return  # settled: it changes no more
            except Exception as error:  # no such promise (yet), or the server failed us
                log.debug("reading the tree of %s failed", tree.id, exc_info=True)
                tree.board.put("tree", {"error": f"error: {error}"})
            await asyncio.sleep(AGAIN)


# ── The computations ────────────────────────────────────────────────────────


@dataclass
class Computation:
    id: str
    text: str  # as typed; for one only watched, its root's expression, once read
    watched: bool  # started elsewhere (by a scenario's prompt, say): its state is its tree's
    state: str = "running"  # then resolved, rejected... or failed: no value, and a message why
    value: str = ""
    message: str = ""
    began: float = field(default_factory=time.monotonic)
    took: float | None = None  # seconds, once it ended


class Listing:
    """The computations the page lists, newest first."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.listed: dict[str, Computation] = {}  # oldest first

    def add(self, id: str, text: str, watched: bool) -> None:
        """List computation ``id`` first (again, if it was listed: it keeps what it knew)."""
        known = self.listed.pop(id) if id in self.listed else Computation(id, text, watched)
        self.listed[id] = known
        while len(self.listed) > LISTED:
            del self.listed[next(iter(self.listed))]
        self.publish()

    def end(self, id: str, state: str, value: str = "", message: str = "") -> None:
        """Computation ``id`` ended: its state, and its value or why it has none."""
        computation = self.listed.get(id)
        if computation is None or computation.took is not None:
            return
        computation.state, computation.value, computation.message = state, value, message
        computation.took = time.monotonic() - computation.began
        self.publish()

    def seen(self, root: Node) -> None:
        """A new state of a tree: of a computation only watched, what it computes, how it ended."""
        computation = self.listed.get(root.id)
        if computation is None or not computation.watched:
            return
        if not computation.text:
            computation.text = root.what.removeprefix("= ")
            self.publish()
        if root.state != "pending":
            self.end(root.id, root.state, str(root.value) if root.state == "resolved" else "")

    def publish(self) -> None:
        shown = [
            {
                "id": c.id,
                "text": c.text,
                "state": c.state,
                "value": c.value,
                "message": c.message,
                "took": None if c.took is None else round(c.took, 1),
            }
            for c in reversed(self.listed.values())
        ]
        self.board.put("computations", shown)
