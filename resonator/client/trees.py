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
changed) and yields each state that differs from the last, until the root
settles. The prompt's ``:watch`` and the page both follow trees with it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from resonate.codec import Codec, NoopEncryptor
from resonate.error import ApplicationError, ServerError
from resonate.ids import ORIGIN_SEP, join_id
from resonate.promises import Promises
from resonate_base import PROTOCOL_VERSION

from resonator.parser import render

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from resonator.connections import Connection

EVERY = 0.2  # seconds between two reads of a tree that is followed
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
    # It and every promise under it settled: it will never change again. Set
    # from the children's own, once they are read, so that asking costs no
    # walk down a tree that may be a thousand levels deep.
    final: bool = field(default=False, compare=False)


class Reader:
    """Reads computations from the server of a ``Connection``: their promises, and their tasks.

    A subtree whose every promise settled never changes, so it is read once
    and then remembered: following a computation costs reads of its pending
    part only.
    """

    def __init__(self, connection: Connection) -> None:
        self.promises = Promises(connection.sender, Codec(NoopEncryptor()))
        self.network = connection.network
        self.token = connection.token  # for the head of task.get, where the real server reads it
        self.finals: dict[str, Node] = {}  # subtrees that will never change, by root id

    async def tree(self, id: str) -> Node | None:
        """The tree under promise ``id``, or None if there is no such promise."""
        if known := self.finals.get(id):
            return known
        try:
            record = await self.promises.get(id)
        except ServerError as error:
            if error.code == 404:
                return None
            raise
        call = record.param.data if isinstance(record.param.data, dict) else {}
        func, args = call.get("func", "?"), call.get("args", [])
        binary = func == "=" and args and isinstance(args[0], list)
        what = f"= {render(args[0])}" if func == "=" and args else " ".join(map(str, [func, *args]))
        children = await asyncio.gather(*(self.tree(join_id(id, n)) for n in "123" if binary))
        node = Node(
            id=id,
            what=what,
            where=place(id, record.tags.get("resonate:target", "")),
            state=record.state,
            value=record.value.data,
            task=await self.task(id) if record.state == "pending" else "",
            children=[child for child in children if child is not None],
        )
        node.final = node.state != "pending" and all(child.final for child in node.children)
        if node.final:
            self.finals[id] = node
        return node

    async def task(self, id: str) -> str:
        """What the task of promise ``id`` is doing, if the server says."""
        head = {"corrId": uuid.uuid4().hex, "version": PROTOCOL_VERSION}
        if self.token:
            head["auth"] = self.token
        request = {"kind": "task.get", "head": head, "data": {"id": id}}
        try:
            answer = json.loads(await self.network.send(json.dumps(request)))
            return TASK.get(answer["data"]["task"]["state"], "")
        except (ValueError, KeyError, TypeError):
            return ""  # a server that does not know task.get, or no task


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


def tally(root: Node) -> tuple[int, int]:
    """(promises settled, promises created) of the tree under ``root``."""
    nodes = [node for _, node in rows(root)]
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
        if (state := [(n.id, n.state, n.task, n.value) for _, n in rows(root)]) != shown:
            shown = state
            yield root
        if ended(root):
            return
        await asyncio.sleep(EVERY)
