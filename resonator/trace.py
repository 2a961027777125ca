"""What the durable functions say as they run, and how slowly they may work.

A trace line names the process, the step and its promise id::

    exp/lhs: = 1 + 2  [demo:1]
    ops/3f2a9c1e: + 1 2  [demo:1.3]

The tests, the demo and a reader in a terminal all learn from these lines
where each step ran and how often.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resonate.context import Context

log = logging.getLogger("resonator")

WINDOW = 60  # columns of a long step shown in a trace line


@dataclass(frozen=True)
class Tracer:
    """What the durable functions know of the process they run in (a Resonate dependency)."""

    name: str  # for trace lines: "exp/lhs", "ops/3f2a9c1e", "prompt" or "embedded"
    # Seconds each operator, and each run of "=", takes: time to crash a
    # process in the middle of a step, for demonstrations.
    op_delay: float = 0.0
    exp_delay: float = 0.0


def trace(ctx: Context, what: str) -> None:
    log.info("%s: %s  [%s]", ctx.get_dependency(Tracer).name, window(what), ctx.info.id)


async def evaluating(ctx: Context, what: str) -> None:
    """What every run of "=" does first: say so, then take its time."""
    trace(ctx, what)
    await asyncio.sleep(ctx.get_dependency(Tracer).exp_delay)


async def operating(ctx: Context, what: str) -> None:
    """What every operator does before it answers: say so, then take its time."""
    trace(ctx, what)
    await asyncio.sleep(ctx.get_dependency(Tracer).op_delay)


def window(text: str) -> str:
    """A long text as its first and last columns, and how long it is."""
    if len(text) <= WINDOW:
        return text
    half = WINDOW // 2
    return f"{text[:half]}…{text[-half:]} ({len(text)} characters)"
