"""The promise tree of a computation, read back from the server, and followed as it changes.

Nothing here is bookkept on the side. Each node is one ``promise.get``; its
children are found by the SDK's lineage rule (``resonate.ids.join_id``): the
n-th durable call made by the function behind promise ``P`` has the id
``P:n`` (or ``P.n`` below the root). ``"="`` on a binary expression makes
three calls, so its children are ``1`` (the left operand, on ``exp/lhs``),
``2`` (the right, on ``exp/rhs``) and ``3`` (the operator, on ``ops``); a
child that does not exist yet has simply not been dispatched.

For a node still pending, a ``task.get`` tells what its task is doing:

- ``running``: a process holds the task's lease and works on it;
- ``awaiting``: it has suspended until the promises it awaits settle;
- ``unclaimed``: the server has sent it to its address and nobody has taken
  it. If that lasts, no process is there: the work waits for one.

A server that does not answer ``task.get`` leaves that column empty.

``changes`` follows a computation as it runs: it reads the tree again five
times a second (no message tells a process that another one's promise
changed), the part that may have changed only (``Reader`` says which), and
yields each state that differs from the last, until the root settles. The
prompt's ``:watch`` and the page both follow trees with it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from resonate.codec import Codec, NoopEncryptor
from resonate.error import ApplicationError, ServerError
from resonate.ids import LINEAGE_SEP, ORIGIN_SEP, join_id
from resonate.promises import Promises
from resonate_base import PROTOCOL_VERSION

from resonator.parser import render

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator

    from resonate.types import PromiseRecord

    from resonator.connections import Connection

EVERY = 0.2  # seconds between two reads of a tree that is followed
READS = 8  # requests a reader has in flight at once, however big the tree
TASK = {"acquired": "running", "suspended": "awaiting", "pending": "unclaimed"}


@dataclass
class Node:
    id: str
    what: str  # "= 1 + 2" or "+ 1 2"
    where: str  # "root", "exp/lhs", "exp/rhs" or "ops"
    state: str  # the promise's: pending, resolved, rejected...
    value: Any
    task: str = ""  # pending only: running, awaiting or unclaimed ("" if not known)
    children: list[Node] = field(default_factory=list)


@dataclass
class Known:
    """What a reader knows of one promise, kept from one read of its tree to the next."""

    node: Node  # as last read (its children are put in as the tree is assembled)
    binary: bool  # "=" of an operation: it dispatches children 1 and 2, then 3
    children: list[str] = field(default_factory=list)  # the ids of those found so far
    # It and every promise under it settled: it will never change again. Its
    # node, with the nodes under it, is kept as it is, and never read again.
    final: bool = False


class Reader:
    """Reads computations from the server of a ``Connection``: their promises, and their tasks.

    It remembers what it read, and reads again only what may have changed:

    - a subtree whose every promise settled never changes: it is read once;
    - a pending promise cannot settle while a child it awaits is pending, so
      it is read again only once none is (the root every time: the server
      may time it out);
    - a suspended task (``awaiting``) stays so until a promise it awaits
      settles: it is read again once one of its children changed;
    - a promise found settled has its parent read in the same pass, once
      that waits for nothing more: a chain that unwinds is read up at once.

    And never more than ``READS`` requests at once, however wide the tree.
    """

    def __init__(self, connection: Connection) -> None:
        self.promises = Promises(connection.sender, Codec(NoopEncryptor()))
        self.network = connection.network
        self.token = connection.token  # for the head of task.get, where the real server reads it
        self.known: dict[str, Known] = {}
        self.version = 0  # counts the reads that found something new
        self.forgot = False  # the server no longer has a promise read before: it restarted

    async def tree(self, id: str) -> Node | None:
        """The tree under promise ``id``, or None if there is no such promise."""
        changed: set[str] = set()  # promises found, or whose state, value or task is new
        todo = self.again(id)
        read = set(todo)  # promises read in this pass, or about to be
        await at_most(READS, todo, lambda each: self.promise(each, changed, read))
        if self.forgot:  # what is known is of a computation the server forgot
            self.known.clear()
            self.forgot = False
            return None
        if id not in self.known:
            return None
        tasks = [
            known.node.id
            for known in self.unsettled(id)
            if known.node.id in changed
            or known.node.task != "awaiting"
            or any(child in changed for child in known.children)
        ]
        await at_most(READS, tasks, lambda each: self.task(each, changed))
        if changed:
            self.version += 1
        return self.assembled(id)

    def again(self, id: str) -> list[str]:
        """The promises under ``id`` to read: those that may have changed, or come to be."""
        if id not in self.known:
            return [id]
        found, todo = [], [id]
        while todo:  # a stack: a tree may be deeper than Python recurses
            known = self.known[todo.pop()]
            if known.final:
                continue
            if known.node.state == "pending" and (known.node.id == id or not self.waits(known)):
                found.append(known.node.id)  # and its children yet to come, once read
            else:
                found += self.unborn(known)
            todo += known.children
        return found

    def waits(self, known: Known) -> bool:
        """A child it awaits is pending: until none is, it cannot settle."""
        return any(self.known[child].node.state == "pending" for child in known.children)

    async def promise(self, id: str, changed: set[str], read: set[str]) -> list[str]:
        """Read promise ``id``, if it exists yet; what to read next (none of ``read``): its
        children yet to come, and once it settled, what it awaited and what awaited it."""
        try:
            record = await self.promises.get(id)
        except ServerError as error:
            if error.code == 404:
                self.forgot = self.forgot or id in self.known
                return []
            raise
        known = self.known.get(id) or self.found(id, record)
        node = known.node
        more = self.unborn(known)
        if (node.state, node.value) != (record.state, record.value.data):
            settles = node.state == "pending"
            node.state, node.value, node.task = record.state, record.value.data, ""
            changed.add(id)
            if settles:  # what it awaited settled before it: read that too
                more += [
                    each for each in known.children if self.known[each].node.state == "pending"
                ]
                # And its parent, once it waits for nothing: it may have
                # settled since, so a chain that unwinds is followed up in
                # this one pass, not one level in each.
                up = self.known.get(parent_of(id))
                if up and up.node.state == "pending" and not self.waits(up):
                    more.append(up.node.id)
        more = [each for each in more if each not in read]
        read.update(more)
        return more

    def found(self, id: str, record: PromiseRecord) -> Known:
        """A promise read for the first time: what it computes, where, and under which parent."""
        call = record.param.data if isinstance(record.param.data, dict) else {}
        func, args = call.get("func", "?"), call.get("args", [])
        args = args if isinstance(args, list) else [args]
        binary = func == "=" and bool(args) and isinstance(args[0], list)
        try:
            what = (
                f"= {render(args[0])}"
                if func == "=" and args
                else " ".join(map(str, [func, *args]))
            )
        except (KeyError, TypeError, ValueError):  # a promise of somebody else's: shown as it is
            what = f"{func} {args}"
        where = place(id, record.tags.get("resonate:target", ""))
        known = self.known[id] = Known(Node(id, what, where, "", None), binary)
        parent = self.known.get(parent_of(id))
        if parent and id not in parent.children:
            parent.children = sorted([*parent.children, id])  # 1, 2, 3: as they were called
        return known

    def unborn(self, known: Known) -> list[str]:
        """The children of a promise that may exist and were not found yet.

        Operands 1 and 2 are dispatched together; the operator, 3, once both
        settled (all three exist under a promise that resolved; one that the
        server timed out may lack some, which are looked for again).
        """
        if not known.binary:
            return []
        children = {self.known[child].node.id: self.known[child].node for child in known.children}
        ids = [join_id(known.node.id, n) for n in "123"]
        operands = [children.get(child) for child in ids[:2]]
        settled = known.node.state != "pending" or all(
            child is not None and child.state != "pending" for child in operands
        )
        return [child for child in ids[: 3 if settled else 2] if child not in children]

    def unsettled(self, id: str) -> list[Known]:
        """The pending promises under ``id``."""
        found, todo = [], [id]
        while todo:
            known = self.known[todo.pop()]
            if not known.final:
                found += [known] if known.node.state == "pending" else []
                todo += known.children
        return found

    async def task(self, id: str, changed: set[str]) -> list[str]:
        """Read what the task of promise ``id`` is doing, if the server says (nothing follows)."""
        head = {"corrId": uuid.uuid4().hex, "version": PROTOCOL_VERSION}
        if self.token:
            head["auth"] = self.token
        request = {"kind": "task.get", "head": head, "data": {"id": id}}
        try:
            answer = json.loads(await self.network.send(json.dumps(request)))
            task = TASK.get(answer["data"]["task"]["state"], "")
        except (ValueError, KeyError, TypeError):
            task = ""  # a server that does not know task.get, or no task
        node = self.known[id].node
        if node.task != task:
            node.task = task
            changed.add(id)
        return []

    def assembled(self, id: str) -> Node:
        """The tree under ``id`` as read: fresh nodes, but for the final subtrees, kept as they are.

        (Fresh: a tree handed out before is never changed under its holder.)
        """
        order, todo = [], [id]
        while todo:
            known = self.known[todo.pop()]
            order.append(known)
            todo += [] if known.final else known.children
        built: dict[str, Node] = {}
        for known in reversed(order):  # every child before its parent
            node = known.node
            if not known.final:
                node = replace(node, children=[built[child] for child in known.children])
                known.final = (
                    node.state != "pending"
                    and len(known.children) == (3 if known.binary else 0)
                    and all(self.known[child].final for child in known.children)
                )
                if known.final:
                    known.node = node
            built[node.id] = node
        return built[id]


async def at_most(most: int, todo: list[str], read: Callable[[str], Awaitable[list[str]]]) -> None:
    """``read`` each id of ``todo``, ``most`` at a time; each read may find more to read."""
    running: set[asyncio.Future[list[str]]] = set()
    try:
        while todo or running:
            while todo and len(running) < most:
                running.add(asyncio.ensure_future(read(todo.pop())))
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for each in done:
                todo += each.result()
    finally:
        for each in running:
            each.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def parent_of(id: str) -> str:
    """``calc:1.3`` → ``calc:1``, ``calc:1`` → ``calc``; a root has none ("")."""
    origin, _, lineage = id.partition(ORIGIN_SEP)
    if LINEAGE_SEP not in lineage:
        return origin if lineage else ""
    return f"{origin}{ORIGIN_SEP}{lineage.rpartition(LINEAGE_SEP)[0]}"


def place(id: str, target: str) -> str:
    """``poll://uni@exp/lhs`` → ``exp/lhs``, ``poll://any@ops`` → ``ops``."""
    if ORIGIN_SEP not in id:
        return "root"
    return target.partition("@")[2] or target


def rows(root: Node) -> list[tuple[str, Node]]:
    """(branch lines + id, node) for every node, top to bottom."""
    found: list[tuple[str, Node]] = []
    # (node, the lines in front of its children's, the branch in front of it),
    # depth first: a stack, since a tree can be deeper than Python recurses.
    todo = [(root, "", "")]
    while todo:
        node, lead, branch = todo.pop()
        found.append((branch + node.id, node))
        last = len(node.children) - 1
        for i, child in reversed(list(enumerate(node.children))):
            below = lead + ("    " if i == last else "│   ")
            todo.append((child, below, lead + ("└── " if i == last else "├── ")))
    return found


def walk(root: Node) -> Iterator[Node]:
    """Every node under ``root``, ``root`` first, depth first."""
    todo = [root]
    while todo:  # a stack: a tree may be deeper than Python recurses
        node = todo.pop()
        yield node
        todo += reversed(node.children)


def tally(root: Node) -> tuple[int, int]:
    """(promises settled, promises created) of the tree under ``root``."""
    nodes = list(walk(root))
    return sum(node.state != "pending" for node in nodes), len(nodes)


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
        if reader.version != shown:
            shown = reader.version
            yield root
        if ended(root):
            return
        await asyncio.sleep(EVERY)
