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

from resonator.client.folding import fold, heading, named, summary
from resonator.client.text import shortened
from resonator.client.trees import changes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from resonator.client.folding import Fold
    from resonator.client.trees import Node, Reader

log = logging.getLogger("resonator")

LISTED = 50  # computations listed; the oldest are forgotten first
AGAIN = 1.0  # seconds before a tree that could not be read is read again
# The page's tree: at most so many boxes, and so many levels below the root
# (each level is an indent); a bigger tree is folded to fit (client/folding.py).
DRAWN = 40
DRAWN_LEVELS = 6
WHAT = 40  # characters of an expression in a folded tree


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
    """The tree as the page draws it: folded if it is big, and a line that says so."""
    top = fold(root, DRAWN, DRAWN_LEVELS)
    said = heading(root, top)
    return {"said": said, "root": shape(top, shorter=bool(said))}


def shape(top: Fold, shorter: bool) -> dict[str, Any]:
    """A row as the page draws it, with the rows under it (``shorter``: long ids and
    expressions shortened, in a big tree).

    A promise's state is in the terminal tree's words, its value as text (a
    value can have more digits than a JavaScript number holds); a run of
    promises passed over has ``levels`` instead.
    """
    shaped: dict[int, dict[str, Any]] = {}
    everything = [top]
    for row in everything:  # top down, so that the rows are shaped bottom up below
        everything += row.children
    for row in reversed(everything):
        node = row.node
        shown: dict[str, Any] = {"folded": summary(row.hidden)}
        if node is None:
            shown["levels"] = row.levels
        else:
            pending = node.state == "pending"
            shown |= {
                "id": node.id,
                "name": named(node.id) if shorter else node.id,
                "what": shortened(node.what, WHAT) if shorter else node.what,
                "where": node.where,
                "state": (node.task or "pending") if pending else node.state,
                "value": str(node.value) if node.state == "resolved" else "",
            }
        shaped[id(row)] = shown | {"children": [shaped[id(child)] for child in row.children]}
    return shaped[id(top)]


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
        while True:
            # A fresh reader each time: one whose read failed half-way may know a
            # promise's new state without having read what that changes.
            reader = self.reader()
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
