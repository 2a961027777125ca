"""Shared helpers: an independent oracle and the in-process Resonate."""

from __future__ import annotations

import ast
import operator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from hypothesis import strategies as st

from resonator.resonator import Worker, connect

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from resonate.resonate import Resonate

    from resonator.parser import Expr

literals = st.integers(min_value=-(10**30), max_value=10**30)
trees: st.SearchStrategy[Expr] = st.recursive(
    literals,
    lambda children: st.tuples(st.sampled_from(["+", "-", "*"]), children, children),
    max_leaves=24,
)

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def oracle(text: str) -> int:
    """Evaluate ``text`` with Python's own parser: nothing shared with ours."""

    def value(node: ast.expr) -> int:
        match node:
            case ast.Constant(value=int(n)):
                return n
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return -value(operand)
            case ast.BinOp(left=left, op=op, right=right):
                return _BINARY[type(op)](value(left), value(right))
        raise ValueError(ast.dump(node))

    # Parenthesised so that newlines inside the text are legal Python too.
    return value(ast.parse(f"({text})", mode="eval").body)


@asynccontextmanager
async def embedded(name: str = "embedded") -> AsyncIterator[Resonate]:
    """A started Resonate on the SDK's in-process server, stopped afterwards."""
    resonate = connect(None, "prompt", "test", Worker(name))
    resonate.start()
    try:
        yield resonate
    finally:
        await resonate.stop()
