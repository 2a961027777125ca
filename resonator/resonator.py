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

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from resonate.connections import HttpConnection, LocalConnection, SSEConnection
from resonate.error import ApplicationError, ResonateError
from resonate.resonate import Resonate
from resonate.retry import ExponentialBackoff

from resonator.parser import ParseError, parse, render
from resonator.tree import draw, fetch

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterable
    from concurrent.futures import Future

    from resonate.context import Context
    from resonate.handle import ResonateHandle

    # Known to the type checker only. Left unresolved at run time, the SDK
    # hands "=" its argument as decoded from JSON (lists where the tree had
    # tuples, which the sequence patterns below match) instead of asking
    # msgspec to convert a recursive type, which it cannot.
    from resonator.parser import Expr

log = logging.getLogger("resonator")

LHS = "poll://uni@exp/lhs"  # the one process with pid lhs in group exp
RHS = "poll://uni@exp/rhs"
OPS = "ops"  # any one process of group ops
EXP = "exp"  # any one process of group exp
DEFAULT_URL = "http://localhost:8001"


# ── The four durable functions ──────────────────────────────────────────────


async def evaluate(ctx: Context, expr: Expr) -> int:
    """``"="``: the value of ``expr``, computed by other processes.

    This body runs again from the top each time something it waits for
    settles. On those replays ``rpc`` finds the promises it created before
    and returns their stored values, so no finished step runs twice.
    """
    trace(ctx, f"= {render(expr)}")
    match expr:
        case [op, lhs, rhs]:
            # Both operands are dispatched before either is awaited: the two
            # halves of the tree are computed at the same time.
            x = ctx.options(target=LHS).rpc("=", lhs)
            y = ctx.options(target=RHS).rpc("=", rhs)
            value: int = await ctx.options(target=OPS).rpc(op, await x, await y)
            return value
        case _:
            return expr


async def add(ctx: Context, x: int, y: int) -> int:
    """``"+"``"""
    await operate(ctx, f"+ {x} {y}")
    return x + y


async def subtract(ctx: Context, x: int, y: int) -> int:
    """``"-"``"""
    await operate(ctx, f"- {x} {y}")
    return x - y


async def multiply(ctx: Context, x: int, y: int) -> int:
    """``"*"``"""
    await operate(ctx, f"* {x} {y}")
    return x * y


async def operate(ctx: Context, what: str) -> None:
    """What every operator does before answering: say so, then take its time."""
    trace(ctx, what)
    await asyncio.sleep(ctx.get_dependency(Worker).op_delay)


def trace(ctx: Context, what: str) -> None:
    log.info("%s: %s  [%s]", ctx.get_dependency(Worker).name, what, ctx.info.id)


@dataclass(frozen=True)
class Worker:
    """This process, as the durable functions see it (a Resonate dependency)."""

    name: str
    op_delay: float = 0.0

    @classmethod
    def from_env(cls, name: str) -> Worker:
        return cls(name, seconds("RESONATOR_OP_DELAY") or 0.0)


def seconds(name: str) -> float | None:
    """The environment variable ``name`` as seconds; None when unset."""
    if not (text := os.environ.get(name)):
        return None
    try:
        return float(text)
    except ValueError:
        raise SystemExit(f"resonator: {name} must be a number of seconds, not {text!r}") from None


def connect(url: str | None, group: str, pid: str, worker: Worker) -> Resonate:
    """This process's Resonate client, with the four functions registered.

    ``url=None`` means an in-process server: every task, whatever its target,
    is delivered to this process. Call ``start()`` on the result, inside a
    running event loop.
    """
    ttl = seconds("RESONATOR_TTL")
    options: dict[str, Any] = {
        "group": group,
        "pid": pid,
        "ttl": timedelta(seconds=ttl) if ttl else None,
        "autostart": False,
    }
    if url is None:
        resonate = Resonate(network=LocalConnection(pid=pid, group=group), **options)
    else:
        # The SDK reconnects by itself; a short ladder makes a restarted
        # server noticed within seconds instead of a minute.
        backoff = ExponentialBackoff(initial=0.25, max_delay=2.0)
        resonate = Resonate(
            network=HttpConnection(url, backoff=backoff),
            sources=[SSEConnection(url, pid=pid, group=group, backoff=backoff)],
            **options,
        )
    resonate.register(evaluate, name="=")
    resonate.register(add, name="+")
    resonate.register(subtract, name="-")
    resonate.register(multiply, name="*")
    resonate.with_dependency(worker)
    return resonate


def calculate(resonate: Resonate, id: str, expr: Expr) -> ResonateHandle[int]:
    """Start the durable computation ``id`` of ``expr``, or attach to it.

    The root's first run happens in this process. Each later run (a replay
    once a child settles, or the rerun when this process dies) goes to any
    exp worker: a root belongs to no prompt, so no prompt waits on another's.
    """
    return resonate.options(target=EXP).run(id, "=", expr)


class ServerLink(logging.Handler):
    """Follows the SDK's connection log: one line per outage, and an event.

    The SDK retries a lost server by itself and logs every attempt; this turns
    those records into "cannot reach" once and "connected" once, and sets
    ``up`` while the push stream (the server's way to reach us) is open.
    """

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.up = asyncio.Event()
        self.reported_down = False

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("SSE connection established"):
            if self.reported_down:
                log.warning("connected to %s", self.url)
            self.reported_down = False
            self.up.set()
        elif record.levelno >= logging.WARNING:
            self.up.clear()
            if not self.reported_down:
                log.warning("cannot reach the Resonate server at %s; retrying", self.url)
            self.reported_down = True

    def attach(self) -> ServerLink:
        sdk = logging.getLogger("resonate.connections")
        sdk.addHandler(self)
        sdk.setLevel(logging.INFO)
        sdk.propagate = log.isEnabledFor(logging.DEBUG)
        return self


# ── Process roles ───────────────────────────────────────────────────────────


async def serve(url: str, group: str, pid: str) -> None:
    """A worker: take tasks addressed to ``group``/``pid`` until SIGINT or SIGTERM."""
    link = ServerLink(url).attach()
    resonate = connect(url, group, pid, Worker.from_env(f"{group}/{pid}"))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    resonate.start()
    try:
        if await first(link.up.wait(), stop.wait()):
            log.info("worker started: group=%s pid=%s", group, pid)
            await stop.wait()
    finally:
        await shut_down(resonate)
    log.info("worker stopped: group=%s pid=%s", group, pid)


async def shut_down(resonate: Resonate) -> None:
    """Stop the client, letting go of whatever task is still running here.

    The SDK closes its connections before it waits for the work in hand, so
    a task still running cannot report, and the SDK logs errors for it. That
    is the expected outcome, not a fault: the task's lease lapses and the
    server gives it to the next worker.
    """
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("resonate").setLevel(logging.CRITICAL)
    await resonate.stop()


async def first(wanted: Coroutine[Any, Any, Any], other: Coroutine[Any, Any, Any]) -> bool:
    """Wait for either coroutine; True when ``wanted`` finished first."""
    tasks = [asyncio.ensure_future(wanted), asyncio.ensure_future(other)]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return tasks[0] in done


class Calculator:
    """The prompt's Resonate client, on an event loop in a thread of its own.

    The prompt itself stays plain blocking code: ``input()`` with readline,
    and Ctrl-C arriving as ``KeyboardInterrupt`` where the prompt waits.
    """

    def __init__(self, url: str | None) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.link = ServerLink(url).attach() if url else None
        worker = Worker.from_env("prompt" if url else "embedded")
        self.resonate = connect(url, "prompt", uuid.uuid4().hex[:8], worker)
        self.call(self._start()).result()

    async def _start(self) -> None:
        self.resonate.start()

    def call[T](self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def connected(self) -> None:
        """Block until the server can push to us (results arrive that way)."""
        if self.link and not self.link.up.is_set():
            self.call(self.link.up.wait()).result()

    def evaluate(self, expr: Expr, id: str) -> int:
        """The value of ``expr``, computed durably as invocation ``id``."""
        self.connected()
        return self.call(self._evaluate(expr, id)).result()

    async def _evaluate(self, expr: Expr, id: str) -> int:
        value = await calculate(self.resonate, id, expr).result()
        # An id that already exists is attached to, whatever it computes, so
        # a reused id must name the same expression to answer this one.
        stored = (await self.resonate.promises.get(id)).param.data
        if stored and stored["args"] != msgspec.json.decode(msgspec.json.encode([expr])):
            other = render(stored["args"][0])
            raise ApplicationError(f"id {id} already names another expression: {other}")
        return value

    def tree(self, id: str) -> str:
        """The promise tree of invocation ``id`` as the server has it now."""
        self.connected()
        root = self.call(fetch(self.resonate.promises, id)).result()
        if root is None:
            raise ApplicationError(f"there is no promise {id}")
        return draw(root)

    def close(self) -> None:
        # A slow operator still running here (embedded) holds the stop up;
        # it has nobody to answer, so the wait is short.
        with contextlib.suppress(TimeoutError):
            self.call(shut_down(self.resonate)).result(timeout=2)
        self.loop.call_soon_threadsafe(self.loop.stop)


def new_id() -> str:
    """A fresh invocation id: 48 random bits, short enough to read in a tree."""
    return uuid.uuid4().hex[:12]


def find_server(args: argparse.Namespace) -> str | None:
    """The server the prompt should use, or None to run embedded."""
    if args.local:
        return None
    if url := args.url or os.environ.get("RESONATE_URL"):
        return str(url)
    return DEFAULT_URL if asyncio.run(healthy(DEFAULT_URL)) else None


async def healthy(url: str) -> bool:
    try:
        timeout = aiohttp.ClientTimeout(total=0.5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{url}/health") as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def compute(calculator: Calculator, text: str, id: str) -> int | None:
    """Parse and evaluate one line; report any error on stderr as one line."""
    try:
        return calculator.evaluate(parse(text), id)
    except ParseError as error:
        print(f"syntax error: {error.message}\n  {text}\n  {' ' * error.column}^", file=sys.stderr)
    except ResonateError as error:
        log.debug("invocation %s failed", id, exc_info=True)
        print(f"error: {error}", file=sys.stderr)
    except Exception as error:
        # Not expected, so not hidden either: the type and message here, the
        # traceback with -vv.
        log.debug("invocation %s failed unexpectedly", id, exc_info=True)
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
    return None


def show_tree(calculator: Calculator, id: str) -> bool:
    try:
        print(calculator.tree(id), flush=True)
    except ResonateError as error:
        print(f"error: {error}", file=sys.stderr)
        return False
    return True


def batch(calculator: Calculator, lines: Iterable[str], id: str | None, tree: bool) -> int:
    """Non-interactive: one value (or tree) per expression on stdout; 1 if any failed."""
    status = 0
    for line in lines:
        if not line.strip():
            continue
        invocation = id or new_id()
        value = compute(calculator, line.rstrip("\n"), invocation)
        if value is None or (tree and not show_tree(calculator, invocation)):
            status = 1
        elif not tree:
            print(value, flush=True)
    return status


def interactive(calculator: Calculator) -> int:
    """The ❯ prompt: Ctrl-C while waiting stops waiting, at the prompt it quits."""
    import readline  # noqa: F401  (gives input() line editing and history)

    print("Resonator: every step of every calculation is a durable promise.")
    print("Type an expression such as (1 + 2) * (3 - 4), or :tree to see the promises")
    print("of the last one (:tree ID for any other). Ctrl-D quits.\n")
    last = ""  # the id of the last computation started, for :tree
    while True:
        try:
            text = input("❯ ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if text.startswith(":"):
            command, _, argument = text.partition(" ")
            if command != ":tree":
                print(f"unknown command {command}: the one command is :tree [ID]")
            elif argument or last:
                show_tree(calculator, argument.strip() or last)
            else:
                print(":tree shows the last computation, and there is none yet: try :tree ID")
            continue
        if not text:
            continue
        id = new_id()
        try:
            value = compute(calculator, text, id)
        except KeyboardInterrupt:
            print(f"\nstopped waiting; the computation goes on as {id}\n")
            last = id
            continue
        if value is not None:
            print(f"\n{text}\n= {value}\n")
            last = id


def prompt(args: argparse.Namespace) -> int:
    url = find_server(args)
    if url:
        print(f"connected to {url}", file=sys.stderr)
    else:
        print("embedded: no Resonate server, running everything in this process", file=sys.stderr)
    calculator = Calculator(url)
    try:
        if args.tree and args.id and not args.expressions:
            return 0 if show_tree(calculator, args.id) else 1
        if args.expressions:
            return batch(calculator, args.expressions, args.id, args.tree)
        if sys.stdin.isatty():
            return interactive(calculator)
        return batch(calculator, sys.stdin, args.id, args.tree)
    finally:
        calculator.close()


# ── Command line ────────────────────────────────────────────────────────────


def arguments(argv: list[str] | None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(
        prog="resonator",
        description="A distributed calculator on durable promises. With GRP set "
        "(exp or ops) it runs as a worker instead of the prompt.",
    )
    cli.add_argument("expressions", nargs="*", metavar="EXPR", help="evaluate these and exit")
    where = cli.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="run embedded, without a server")
    where.add_argument(
        "--url",
        help=f"use this Resonate server (default: RESONATE_URL, else {DEFAULT_URL} if it answers)",
    )
    cli.add_argument("--id", help="name the durable invocation (one expression only)")
    cli.add_argument(
        "--tree",
        action="store_true",
        help="print each computation's promise tree instead of its value; "
        "with --id and no EXPR, the tree of that invocation as it stands",
    )
    cli.add_argument(
        "-v", "--verbose", action="count", default=0, help="-v: trace lines; -vv: debug log"
    )
    args = cli.parse_args(argv)
    if args.id and not (len(args.expressions) == 1 or (args.tree and not args.expressions)):
        cli.error("--id names one invocation: give exactly one EXPR with it")
    if os.environ.get("GRP") and (args.expressions or args.id or args.local):
        cli.error("a worker (GRP set) takes no expressions, --id or --local")
    return args


def setup_logging(verbosity: int, worker: bool) -> None:
    handler = logging.StreamHandler(sys.stdout if worker else sys.stderr)
    if verbosity >= 2:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    else:
        # Never a traceback on screen; -vv shows the detail.
        handler.setFormatter(OneLine())
    debug = verbosity >= 2
    logging.basicConfig(handlers=[handler], level=logging.DEBUG if debug else logging.WARNING)
    # Trace lines are INFO: a worker always shows them, the prompt with -v.
    tracing = worker or verbosity > 0
    log.setLevel(logging.DEBUG if debug else logging.INFO if tracing else logging.WARNING)


class OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    group = os.environ.get("GRP")
    setup_logging(args.verbose, worker=bool(group))
    try:
        if group:
            url = args.url or os.environ.get("RESONATE_URL") or DEFAULT_URL
            asyncio.run(serve(url, group, os.environ.get("PID") or uuid.uuid4().hex[:8]))
            return 0
        return prompt(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        log.debug("resonator failed", exc_info=True)
        print(f"resonator: {type(error).__name__}: {error} (-vv shows more)", file=sys.stderr)
        return 1


def cli() -> None:
    sys.exit(main())
