"""The promise tree of a computation, read back from the server.

Nothing here is bookkept on the side. Each node is one ``promise.get``; its
children are found by the SDK's lineage rule (``resonate.ids.join_id``): the
n-th durable call made by the function behind promise ``P`` has the id
``P:n`` (or ``P.n`` below the root). ``"="`` on a binary expression makes
three calls, so its children are ``1`` (the left operand, on ``exp/lhs``),
``2`` (the right, on ``exp/rhs``) and ``3`` (the operator, on ``ops``); a
child that does not exist yet has simply not been dispatched.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from resonate.error import ServerError
from resonate.ids import ORIGIN_SEP, join_id

from resonator.parser import render

if TYPE_CHECKING:
    from resonate.promises import Promises


@dataclass
class Node:
    id: str
    what: str  # "= 1 + 2" or "+ 1 2"
    where: str  # "root", "exp/lhs", "exp/rhs" or "ops"
    state: str
    value: Any
    children: list[Node] = field(default_factory=list)


async def fetch(promises: Promises, id: str) -> Node | None:
    """The tree under promise ``id``, or None if there is no such promise."""
    try:
        record = await promises.get(id)
    except ServerError as error:
        if error.code == 404:
            return None
        raise
    call = record.param.data if isinstance(record.param.data, dict) else {}
    func, args = call.get("func", "?"), call.get("args", [])
    binary = func == "=" and args and isinstance(args[0], list)
    what = f"= {render(args[0])}" if func == "=" and args else " ".join(map(str, [func, *args]))
    children = await asyncio.gather(*(fetch(promises, join_id(id, n)) for n in "123" if binary))
    return Node(
        id=id,
        what=what,
        where=route(id, record.tags.get("resonate:target", "")),
        state=record.state,
        value=record.value.data,
        children=[child for child in children if child is not None],
    )


def route(id: str, target: str) -> str:
    """``poll://uni@exp/lhs`` → ``exp/lhs``, ``poll://any@ops`` → ``ops``."""
    if ORIGIN_SEP not in id:
        return "root"
    return target.partition("@")[2] or target


def draw(root: Node) -> str:
    """The tree with box-drawing characters, one aligned row per promise."""
    rows: list[tuple[str, Node]] = []

    def walk(node: Node, lead: str, branch: str) -> None:
        rows.append((branch + node.id, node))
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            walk(child, lead + ("    " if last else "│   "), lead + ("└── " if last else "├── "))

    walk(root, "", "")
    columns = [
        [
            name,
            node.what,
            node.where,
            node.state,
            "" if node.state == "pending" else str(node.value),
        ]
        for name, node in rows
    ]
    widths = [max(len(row[i]) for row in columns) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, [*widths, 0], strict=True)).rstrip()
        for row in columns
    )
