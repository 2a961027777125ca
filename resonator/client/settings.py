"""The command line: arguments, the environment's settings, and logging."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, NoReturn
from urllib.parse import urlsplit

from resonate.resonate import DEFAULT_MAX_CONCURRENT_TASKS, DEFAULT_TTL

from resonator.connections import healthy
from resonator.servers import KEEP, CommandLine, OneLine, positive

DEFAULT_URL = "http://localhost:8001"
SCHEMES = ("http://", "https://", "postgresql://", "postgres://")
JOBS = 8  # expressions of a batch in flight at once (see docs/benchmark.md)
PIDS = {"exp": ("lhs", "rhs"), "ops": None}  # the pids a group's workers may take
ID = re.compile(r"[!-9;-~]{1,100}")  # printable ASCII but ':', which the SDK reserves
# A pid is a part of the worker's address and of its stream's path, /poll/ops/PID:
# "a/b" or "%2e%2e" would be another path, where no stream is.
PID_FORM = re.compile(r"[A-Za-z0-9_-]{1,64}")
# argparse takes any word that starts with '-' for an option, but '-5 + 3' and
# '-(2 + 3)' are expressions: they are marked before parsing, unmarked after.
NOT_AN_OPTION = "\x00"
LOOKS_NEGATIVE = re.compile(r"-+[\d(\s]")

ENVIRONMENT = f"""\
environment:
  GRP                 run as a worker of this group: exp or ops (unset: the prompt)
  PID                 the worker's pid: lhs or rhs for exp; for ops, up to 64 letters,
                      digits, - or _ (default: random)
  RESONATE_URL        the Resonate server, as --url (default: {DEFAULT_URL}
                      if it answers, else embedded)
  RESONATOR_TTL       seconds a task's lease lasts: how soon the work of a dead
                      worker goes to another (default: the SDK's, 60)
  RESONATOR_SLOTS     tasks this process runs at once, as --slots (default: the
                      SDK's, {DEFAULT_MAX_CONCURRENT_TASKS})
  RESONATOR_OP_DELAY  seconds each operator takes, to leave time for a crash (default: 0)
  RESONATOR_EXP_DELAY seconds each run of "=" takes, likewise (default: 0)
  RESONATOR_KEEP      embedded: settled computations kept in memory; older ones
                      are forgotten (default: {KEEP})
"""


# What a process does: work (GRP set); or the ❯ prompt; or compute the
# expressions given or piped in; or show a computation that exists.
type Role = Literal["worker", "prompt", "batch", "follow"]


@dataclass(frozen=True)
class Settings:
    """What the command line and the environment say this process is."""

    group: str | None  # None: not a worker
    pid: str
    url: str | None  # None: embedded, everything in this process
    ttl: timedelta  # a task's lease
    op_delay: float  # seconds each operator takes
    exp_delay: float  # seconds each run of "=" takes
    keep: int  # embedded: settled computations kept in memory
    slots: int  # tasks run at once
    role: Role = "prompt"

    @property
    def name(self) -> str:
        """What this process is called in trace lines."""
        if self.group is not None:
            return f"{self.group}/{self.pid}"
        return "prompt" if self.url else "embedded"


def arguments(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    cli = CommandLine(
        prog="resonator",
        description="A distributed calculator on durable promises. With GRP set it is a\n"
        "worker; otherwise the prompt: give expressions as arguments, pipe them in,\n"
        "or type them at the ❯ prompt.",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_argument("expressions", nargs="*", metavar="EXPR", help="evaluate these and exit")
    where = cli.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="run embedded, without a server")
    where.add_argument(
        "--url", help="the Resonate server, http://... or postgresql://... (default: RESONATE_URL)"
    )
    cli.add_argument("--id", help="name the durable invocation (one expression only)")
    cli.add_argument(
        "--tree",
        action="store_true",
        help="print each computation's promise tree instead of its value; "
        "with --id and no EXPR, the tree of that invocation as it stands",
    )
    cli.add_argument(
        "--watch",
        action="store_true",
        help="show each computation's promise tree as it changes, until it settles; "
        "with --id and no EXPR, follow that invocation",
    )
    cli.add_argument(
        "-j",
        "--jobs",
        type=jobs,
        default=JOBS,
        metavar="N",
        help="expressions given or piped in: up to N computed at once, their values "
        "printed in order (default: %(default)s)",
    )
    cli.add_argument(
        "--slots",
        type=positive,
        metavar="N",
        help="run up to N tasks at once (default: RESONATOR_SLOTS, else the SDK's "
        f"{DEFAULT_MAX_CONCURRENT_TASKS}); a worker with one slot takes one step at a time",
    )
    cli.add_argument(
        "-v", "--verbose", action="count", default=0, help="-v: trace lines; -vv: debug log"
    )
    words = sys.argv[1:] if argv is None else argv
    marked = [NOT_AN_OPTION + w if LOOKS_NEGATIVE.match(w) else w for w in words]
    args = cli.parse_args(marked)
    args.expressions = [e.removeprefix(NOT_AN_OPTION) for e in args.expressions]
    if args.url is not None:
        args.url = args.url.removeprefix(NOT_AN_OPTION)
    if args.id is not None:
        args.id = args.id.removeprefix(NOT_AN_OPTION)
        if not ID.fullmatch(args.id):
            cli.error("--id takes 1 to 100 printable ASCII characters, without ':' or spaces")
    if args.tree and args.watch:
        cli.error("--tree and --watch: choose one")
    alone = (args.tree or args.watch) and not args.expressions
    if args.id and not (len(args.expressions) == 1 or alone):
        cli.error("--id names one invocation: give exactly one EXPR with it")
    settings = environment(args.url, args.slots)
    named = "--url" if args.url else "RESONATE_URL"
    if settings.url and (wrong := what_is_wrong(settings.url)):
        cli.error(f"{named} {wrong}: {settings.url!r}")
    if settings.group and (args.expressions or args.id or args.local or args.tree or args.watch):
        cli.error("a worker (GRP set) takes no expressions, --id, --tree, --watch or --local")
    if args.local:
        settings = dataclasses.replace(settings, url=None)
    elif settings.url is None and (settings.group or healthy(DEFAULT_URL)):
        # A worker waits for the default server; the prompt uses it if it answers.
        settings = dataclasses.replace(settings, url=DEFAULT_URL)
    role: Role = "prompt"
    if settings.group:
        role = "worker"
    elif alone and args.id:
        role = "follow"
    elif args.expressions or args.id or not sys.stdin.isatty():
        role = "batch"
    return args, dataclasses.replace(settings, role=role)


def jobs(text: str) -> int:
    """``--jobs``: a whole number above 0 (a negative one comes marked, as an expression)."""
    return positive(text.removeprefix(NOT_AN_OPTION))


def what_is_wrong(url: str) -> str | None:
    """Why ``url`` cannot name a Resonate server, or None if it can."""
    if not url.startswith(SCHEMES):
        return f"must start with {', '.join(SCHEMES[:-1])} or {SCHEMES[-1]}"
    try:
        parts = urlsplit(url)
    except ValueError as error:  # "http://[::1"
        return f"is no URL ({error})"
    if url.startswith("http") and not parts.hostname:
        return "names no host"
    try:
        port = parts.port
    except ValueError:  # not a number, or past 65535
        port = 0
    return "names no port a server can listen on (1 to 65535)" if port == 0 else None


def environment(url: str | None, slots: int | None) -> Settings:
    """The settings the environment makes, but for ``url`` and ``slots`` when given."""
    group = os.environ.get("GRP") or None
    pid = os.environ.get("PID") or None
    if group is not None:
        if group not in PIDS:
            usage(f"GRP must be exp or ops, not {group!r}")
        pids = PIDS[group]
        if pids and pid is None:
            usage("an exp worker needs a PID: PID=lhs or PID=rhs")
        if pids and pid not in pids:
            usage(f"an exp worker's PID must be lhs or rhs, not {pid!r}")
        if pid is not None and not PID_FORM.fullmatch(pid):
            usage(f"a worker's PID must be 1 to 64 letters, digits, '-' or '_', not {pid!r}")
    return Settings(
        group=group,
        pid=pid or uuid.uuid4().hex[:8],
        url=url or os.environ.get("RESONATE_URL") or None,
        ttl=timedelta(seconds=ttl) if (ttl := seconds("RESONATOR_TTL")) else DEFAULT_TTL,
        op_delay=seconds("RESONATOR_OP_DELAY") or 0.0,
        exp_delay=seconds("RESONATOR_EXP_DELAY") or 0.0,
        keep=number("RESONATOR_KEEP", KEEP),
        slots=slots or number("RESONATOR_SLOTS", DEFAULT_MAX_CONCURRENT_TASKS),
    )


def seconds(name: str) -> float | None:
    """The environment variable ``name`` as seconds; None when unset."""
    if not (text := os.environ.get(name)):
        return None
    try:
        value = float(text)
    except ValueError:
        usage(f"{name} must be a number of seconds, not {text!r}")
    if value < 0:
        usage(f"{name} must not be negative, not {text!r}")
    if not value < 10**6:  # nor nan, nor inf
        usage(f"{name} must be under a million seconds, not {text!r}")
    return value


def number(name: str, default: int) -> int:
    """The environment variable ``name`` as a positive whole number."""
    text = os.environ.get(name) or str(default)
    try:
        return positive(text)
    except argparse.ArgumentTypeError as error:
        usage(f"{name} must be {error}")


def usage(message: str) -> NoReturn:
    print(f"resonator: {message}", file=sys.stderr)
    raise SystemExit(2)


def setup_logging(verbosity: int, worker: bool) -> None:
    """Trace lines are INFO: a worker always shows them, the prompt with -v.

    Without -vv there is never a traceback and never a line from the SDK or
    asyncio: what matters of theirs is said once, in our own words.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    handler = CurrentStream(worker)
    debug = verbosity >= 2
    if debug:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    else:
        handler.setFormatter(OneLine())
    logging.basicConfig(handlers=[handler], level=logging.DEBUG if debug else logging.CRITICAL)
    # psycopg sets its own level on import, unless one was set before.
    logging.getLogger("psycopg").setLevel(logging.DEBUG if debug else logging.CRITICAL)
    tracing = worker or verbosity > 0
    level = logging.DEBUG if debug else logging.INFO if tracing else logging.WARNING
    logging.getLogger("resonator").setLevel(level)


class CurrentStream(logging.StreamHandler):  # type: ignore[type-arg]
    """Each line to stdout (a worker's) or stderr, as they are when it is printed.

    While the ❯ prompt is drawn, both are replaced by streams that print above it.
    """

    def __init__(self, worker: bool) -> None:
        super().__init__()
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout if self.worker else sys.stderr
        super().emit(record)
