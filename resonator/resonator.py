"""Resonator: a calculator in which every step is a durable promise.

The evaluator ``"="`` fans each binary expression out to two workers, the left
operand to ``exp/lhs`` and the right to ``exp/rhs``, then hands the operator to
any worker of the ``ops`` group. Each of those invocations is a durable promise
on the Resonate server, so a process can die anywhere and the computation still
finishes once something takes its place.

One program plays every part, chosen by the environment::

    resonator-devserver              # a Resonate server on :8001
    GRP=exp PID=lhs resonator        # left operands
    GRP=exp PID=rhs resonator        # right operands
    GRP=ops resonator                # + - *
    resonator                        # the ❯ prompt

With no server to talk to, the prompt runs all of it in one process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resonate.resonate import DEFAULT_MAX_CONCURRENT_TASKS, Resonate
from resonate.retry import Never

from resonator.connections import Connection
from resonator.parser import render
from resonator.trace import Tracer, evaluating, operating

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import timedelta

    from resonate.context import Context

    # Known to the type checker only. Left unresolved at run time, the SDK
    # hands "=" its argument as decoded from JSON (lists where the expression
    # had tuples, which the sequence patterns below match) instead of asking
    # msgspec to convert a recursive type, which it cannot (resonate-sdk
    # 0.8.1; tests/test_upstream.py shows it).
    from resonator.parser import Expr

LHS = "poll://uni@exp/lhs"  # unicast: the one process with pid lhs in group exp
RHS = "poll://uni@exp/rhs"
OPS = "ops"  # anycast: any one process of group ops
EXP = "exp"  # anycast: any one process of group exp


# ── The four durable functions ──────────────────────────────────────────────


async def evaluate(ctx: Context, expr: Expr) -> int:
    """``"="``: the value of ``expr``, computed by other processes.

    This body runs again from the top each time something it waits for
    settles. On those replays ``rpc`` finds the promises it created before
    and returns their stored values, so no finished step runs twice.
    (``evaluating`` prints a trace line, a side effect, which durable code
    keeps in leaf functions; it stays here on purpose, to show every replay.)
    """
    await evaluating(ctx, f"= {render(expr)}")
    match expr:
        case [op, lhs, rhs]:
            # Both operands are dispatched before either is awaited: the two
            # halves of the expression are computed at the same time.
            x = ctx.options(target=LHS).rpc("=", lhs)
            y = ctx.options(target=RHS).rpc("=", rhs)
            value: int = await ctx.options(target=OPS).rpc(op, await x, await y)
            return value
        case _:
            return expr


async def add(ctx: Context, x: int, y: int) -> int:
    await operating(ctx, f"+ {x} {y}")
    return x + y


async def subtract(ctx: Context, x: int, y: int) -> int:
    await operating(ctx, f"- {x} {y}")
    return x - y


async def multiply(ctx: Context, x: int, y: int) -> int:
    await operating(ctx, f"* {x} {y}")
    return x * y


# The names the functions are registered under. An operator in an expression
# ("+") is the name of the function that computes it, so "=" calls
# rpc(op, ...) with the very op it finds there.
FUNCTIONS: dict[str, Callable[..., Awaitable[int]]] = {
    "=": evaluate,
    "+": add,
    "-": subtract,
    "*": multiply,
}


# ── Connecting: a Resonate for this process ─────────────────────────────────


def connect(
    url: str | None,
    group: str,
    pid: str,
    ttl: timedelta,
    tracer: Tracer,
    *,
    keep: int | None = None,
    slots: int = DEFAULT_MAX_CONCURRENT_TASKS,
) -> tuple[Resonate, Connection]:
    """This process's ``Resonate``, with the four functions registered.

    ``url`` is the server (None: the SDK's own, in this process: every task,
    whatever its target, is delivered here). ``group`` and ``pid`` say which
    tasks are this process's: those sent to ``poll://any@group`` and to
    ``poll://uni@group/pid``. ``ttl`` is the lease on a task it takes: how
    soon the work of a process that died is handed out again. ``tracer`` is
    what the functions know of this process (its name, for trace lines).
    The SDK's own server keeps the ``keep`` most recently settled
    computations (None: all). ``slots`` is how many tasks it runs at once
    (the SDK's default: 64); a task that arrives when all are busy waits
    here for one. Call ``start()`` on it inside a
    running event loop; the connection tells how the server fares.
    """
    connection = Connection(url, group, pid, ttl, keep=keep, slots=slots)  # works around defects
    resonate = Resonate(
        network=connection.network,  # where requests go: the server at url
        sources=connection.sources,  # where work and results come from
        group=group,
        pid=pid,
        ttl=ttl,
        max_concurrent_tasks=slots,  # tasks run at once; more wait for a slot
        heartbeat=connection.heartbeat,  # renews the leases of the tasks in hand
        subscription_refresh_secs=connection.refresh_secs,
        # The functions are deterministic: one that raised would raise again.
        # The SDK's default retries a function that raised before its first
        # durable call, for ever and without a word, pausing twice as long each
        # time; with Never the promise is rejected at once and the caller is told.
        retry_policy=Never(),
        autostart=False,
    )
    for name, function in FUNCTIONS.items():
        resonate.register(function, name=name)
    resonate.with_dependency(tracer)
    return resonate, connection


# ── Start-up: one program, three roles ──────────────────────────────────────


def main(argv: list[str] | None = None) -> int:
    """Become what GRP names: an exp worker, an ops worker, or (unset) the prompt."""
    # Imported here: the functions above need none of it, and a worker loads
    # nothing of the terminal's.
    from resonator import worker
    from resonator.client.settings import arguments, setup_logging
    from resonator.terminal import batch, follow, prompt

    args, settings = arguments(argv)
    setup_logging(args.verbose, worker=settings.role == "worker")
    tracer = Tracer(settings.name, settings.op_delay, settings.exp_delay)
    group = settings.group or "prompt"
    resonate, connection = connect(
        settings.url,
        group,
        settings.pid,
        settings.ttl,
        tracer,
        keep=settings.keep,
        slots=settings.slots,
    )
    if settings.role == "worker":
        return worker.work(resonate, connection)
    # The prompt starts each computation with the root's target set to any
    # exp worker. The root's first run happens in the prompt; each later run
    # (a replay once a child settles, or the rerun when the prompt dies) goes
    # to an exp worker: a root belongs to no prompt, so no prompt waits on
    # another's.
    computations = resonate.options(target=EXP)
    match settings.role:
        case "prompt":  # the ❯, typed at
            return prompt.converse(computations, connection)
        case "batch":  # expressions given as arguments or piped in
            return batch.compute_all(computations, connection, args)
        case _:  # --tree or --watch of a computation that exists
            return follow.follow(computations, connection, args)
