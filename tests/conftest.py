"""Shared helpers: an independent oracle and the in-process Resonate."""

from __future__ import annotations

import ast
import operator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
from hypothesis import strategies as st

from resonator.resonator import Worker, connect
from tests.processes import Topology, real_server_command

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from resonate.resonate import Resonate

    from resonator.parser import Expr

literals = st.integers(min_value=-(10**30), max_value=10**30)
trees: st.SearchStrategy[Expr] = st.recursive(
    literals,
    lambda children: st.tuples(st.sampled_from(["+", "-", "*"]), children, children),
    max_leaves=24,
)

_BINARY: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
}


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


@pytest.fixture(params=["stand-in", "resonate"])
def real_server(request: pytest.FixtureRequest) -> str | None:
    """Each process test runs against the stand-in, and the real server if present."""
    if request.param == "stand-in":
        return None
    if command := real_server_command():
        return command
    pytest.skip("no real Resonate server: put `resonate` on PATH or set RESONATE_SERVER_CMD")


@pytest.fixture
def topology(real_server: str | None) -> Iterator[Topology]:
    """A running server with exp/lhs, exp/rhs and ops; all killed afterwards."""
    with Topology(real_server) as topology:
        yield topology.standard()
