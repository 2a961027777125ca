"""The driver of every mode the benchmark measures: Resonator's (``bench.py``) and the peers'
(``peers/``). It computes expressions under fresh ids, times each, and checks each answer
against Python's own arithmetic.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from resonator.parser import Expr, Op

OPERATORS: tuple[Op, ...] = ("+", "*", "-")
IN_FLIGHT = 16  # the throughput compared across modes
WARM = 2 * IN_FLIGHT  # evaluations, IN_FLIGHT at a time, before each measurement


def balanced(depth: int) -> Expr:
    """A full binary tree: 2**depth - 1 operators, ``depth`` levels."""

    def build(level: int, at: int) -> Expr:
        if level == 0:
            return at % 9 + 1
        return (OPERATORS[level % 3], build(level - 1, 2 * at), build(level - 1, 2 * at + 1))

    return build(depth, 0)


def value(expr: Expr) -> int:
    """What ``expr`` comes to, by Python's own arithmetic: the oracle of every answer."""
    match expr:
        case (op, lhs, rhs):
            x, y = value(lhs), value(rhs)
            return x + y if op == "+" else x - y if op == "-" else x * y
        case _:
            return expr


class Driver:
    """Evaluations under fresh ids, in one mode: timed, and each answer checked.

    A mode says how to ``compute``; Resonator's modes (``Resonating``) and
    the peers (``bench/peers/``) are all driven by this code.
    """

    def __init__(self, mode: str) -> None:
        self.mode, self.n = mode, 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def compute(self, id: str, expr: Expr) -> object:
        """The answer to ``expr``, computed under ``id``."""
        raise NotImplementedError

    async def timed(self, expr: Expr) -> tuple[str, float]:
        self.n += 1
        id = f"bench-{self.mode}-{self.n}"
        start = time.perf_counter()
        answer = await self.compute(id, expr)
        elapsed = time.perf_counter() - start
        if answer != value(expr):
            raise AssertionError(f"{self.mode} answered {answer!r} to {id}, not {value(expr)}")
        return id, elapsed

    async def latencies(self, expr: Expr, runs: int, warmup: int = 2) -> list[float]:
        for _ in range(warmup):
            await self.timed(expr)
        return [(await self.timed(expr))[1] for _ in range(runs)]

    async def rate(self, expr: Expr, in_flight: int, total: int) -> float:
        """Evaluations per second with ``in_flight`` of them under way at all times."""
        remaining = total

        async def lane() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await self.timed(expr)

        start = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(in_flight)))
        return total / (time.perf_counter() - start)

    async def throughput(self) -> float:
        """Evaluations per second of balanced depth 2, ``IN_FLIGHT`` at a time, once warm."""
        await self.rate(balanced(2), IN_FLIGHT, WARM)  # connections, caches
        return await self.rate(balanced(2), IN_FLIGHT, 4 * IN_FLIGHT)
