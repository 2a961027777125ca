"""The prompt: expressions in, values out, interactively or in batch.

Its Resonate client (``calculator.Calculator``) runs on a thread of its own;
everything here is plain blocking code, and Ctrl-C arrives as
``KeyboardInterrupt`` wherever it waits.
"""

from __future__ import annotations

import contextlib
import io
import logging
import signal
import sys
import unicodedata
import uuid
from typing import IO, TYPE_CHECKING

from resonate.error import ResonateError

from resonator.parser import ParseError, parse
from resonator.terminal.calculator import Calculator, Unreachable

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable, Iterator

    from resonate.resonate import Resonate

    from resonator.connections import Server

log = logging.getLogger("resonator")

CONNECT_WAIT = 5.0  # seconds a batch run waits for its server before giving up
WINDOW = 60  # columns of a long input shown around a syntax error
HELP = """\
Type an expression such as (1 + 2) * (3 - 4), or a command:
  :tree [ID]   the promises of the last computation (or of ID), as the server has them
  :watch [ID]  the same, redrawn as it changes, until it settles (Ctrl-C stops watching)
  :help        this
Ctrl-C stops waiting for a result (the computation goes on); Ctrl-D quits."""


# ── Reporting ───────────────────────────────────────────────────────────────


def syntax_error(text: str, error: ParseError) -> str:
    """The message, the input as a terminal shows it, and a caret under the column.

    Control characters are shown escaped (``\\x00``), tabs as the spaces they
    would take, and a long input as a window around the column.
    """
    pieces = [shown(char) for char in expand_tabs(text)]
    column = len(expand_tabs(text[: error.column]))
    widths = [width(piece) for piece in pieces]
    start, end = 0, len(pieces)
    if sum(widths) > WINDOW:
        start = max(0, min(column - WINDOW // 2, len(pieces) - WINDOW // 2))
        end = start
        while end < len(pieces) and sum(widths[start : end + 1]) <= WINDOW:
            end += 1
    before = "…" if start > 0 else ""
    after = "…" if end < len(pieces) else ""
    caret = len(before) + sum(widths[start:column])
    line = before + "".join(pieces[start:end]) + after
    return f"syntax error: {error.message}\n  {line}\n  {' ' * caret}^"


def expand_tabs(text: str) -> str:
    return text.expandtabs(8)


def shown(char: str) -> str:
    """A character as it can be safely printed: control and format characters escaped."""
    if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
        return char.encode("unicode_escape").decode("ascii")
    return char


def width(piece: str) -> int:
    """Terminal columns: wide characters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in piece
    )


def compute(calculator: Calculator, text: str, id: str, named: bool = False) -> int | None:
    """Parse and evaluate one line; report any error on stderr as one line."""
    try:
        return calculator.evaluate(parse(text), id, named)
    except ParseError as error:
        print(syntax_error(text, error), file=sys.stderr)
    except ResonateError as error:
        log.debug("invocation %s failed", id, exc_info=True)
        print(f"error: {error}", file=sys.stderr)
    except Exception as error:
        # Not expected, so not hidden either: the type and message here, the
        # traceback with -vv.
        log.debug("invocation %s failed unexpectedly", id, exc_info=True)
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
    return None


def watch_one(calculator: Calculator, id: str) -> bool:
    """Follow computation ``id`` until it settles; False if it failed or is unknown."""
    try:
        last = calculator.watch(id)
    except ResonateError as error:
        print(f"error: {error}", file=sys.stderr)
        return False
    return last is not None and last.state == "resolved"


def show_tree(calculator: Calculator, id: str) -> bool:
    try:
        print(calculator.tree(id), flush=True)
    except ResonateError as error:
        print(f"error: {error}", file=sys.stderr)
        return False
    return True


def new_id() -> str:
    """A fresh invocation id: 48 random bits, short enough to read in a tree."""
    return uuid.uuid4().hex[:12]


# ── Batch: arguments or piped lines ─────────────────────────────────────────


def lines(stream: IO[bytes]) -> Iterator[tuple[int, str | None]]:
    """(line number, text) for each line; text is None for a line that is not UTF-8.

    Any line ending will do (LF, CRLF, a lone CR), a byte-order mark may lead,
    and the locale's encoding does not matter.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline=None)
    for number, ended in enumerate(text, start=1):
        line = ended.rstrip("\n")
        undecodable = any("\udc80" <= char <= "\udcff" for char in line)
        yield number, None if undecodable else line


def batch(
    calculator: Calculator, inputs: Iterable[tuple[int, str | None]], args: argparse.Namespace
) -> int:
    """One value (or tree) per expression on stdout; 1 if any failed."""
    status = 0
    for number, text in inputs:
        if text is None:
            print(f"line {number}: not UTF-8 text; skipped", file=sys.stderr)
            status = 1
            continue
        if not text.strip():
            continue
        id = args.id or new_id()
        try:
            if args.watch:
                done = started(calculator, text, id) and watch_one(calculator, id)
                status = status if done else 1
                continue
            value = compute(calculator, text, id, named=bool(args.id))
        except KeyboardInterrupt:
            print(f"\nstopped waiting; the computation goes on as {id}", file=sys.stderr)
            return 130
        if value is None or (args.tree and not show_tree(calculator, id)):
            status = 1
        elif not args.tree:
            print(value, flush=True)
    return status


def started(calculator: Calculator, text: str, id: str) -> bool:
    """Start computing ``text`` as ``id``; report why not in one line."""
    try:
        calculator.start(parse(text), id)
    except ParseError as error:
        print(syntax_error(text, error), file=sys.stderr)
        return False
    except ResonateError as error:
        print(f"error: {error}", file=sys.stderr)
        return False
    return True


# ── Interactive: the ❯ prompt ───────────────────────────────────────────────


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Make Ctrl-C at ``input()`` take effect every time.

    CPython's readline waits in ``select()`` and looks at signals only when
    that wait is interrupted. A Ctrl-C that lands after ``input()`` begins but
    before the wait starts (while the prompt is being drawn) would be noticed
    only at the next key. A timer signal interrupts the wait ten times a
    second, so a pending Ctrl-C is acted on within 0.1 s.
    """
    previous = signal.signal(signal.SIGALRM, lambda *_: None)
    signal.setitimer(signal.ITIMER_REAL, 0.1, 0.1)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def interactive(calculator: Calculator) -> int:
    """The ❯ prompt: Ctrl-C while waiting stops waiting, at the prompt it quits."""
    import readline  # noqa: F401  (gives input() line editing and history)

    print("Resonator: every step of every calculation is a durable promise.")
    print(HELP + "\n")
    last = ""  # the id of the last computation started, for :tree
    while True:
        try:
            with interruptible():
                text = input("❯ ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        except UnicodeDecodeError:
            print("error: that line is not UTF-8 text", file=sys.stderr)
            continue
        if text in ("quit", "exit") or text.startswith(":"):
            command(calculator, text, last)
        elif text:
            last = evaluate_at_prompt(calculator, text) or last


def command(calculator: Calculator, text: str, last: str) -> None:
    """Answer a line that is not an expression."""
    name, _, argument = text.partition(" ")
    id = argument.strip() or last
    if name in ("quit", "exit"):
        print("Ctrl-D quits (so does Ctrl-C at the prompt).")
    elif name == ":help":
        print(HELP)
    elif name not in (":tree", ":watch"):
        print(f"unknown command {name}; :help lists the commands")
    elif not id:
        print(f"{name} shows the last computation, and there is none yet: try {name} ID")
    elif name == ":tree":
        with contextlib.suppress(KeyboardInterrupt):
            show_tree(calculator, id)
    else:
        try:
            watch_one(calculator, id)
        except KeyboardInterrupt:
            print(f"\nstopped watching; the computation goes on as {id}\n")


def evaluate_at_prompt(calculator: Calculator, text: str) -> str | None:
    """Compute ``text`` and show its value; the id of the computation, if one started."""
    try:
        if calculator.link and not calculator.link.up.is_set():
            print(f"waiting for the server at {calculator.link.url} (Ctrl-C stops waiting)")
        calculator.connected()
    except KeyboardInterrupt:
        print("\nstopped waiting for the server; nothing was started\n")
        return None
    id = new_id()
    try:
        value = compute(calculator, text, id)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; the computation goes on as {id}\n")
        return id
    if value is None:
        return None
    print(f"\n{text}\n= {value}\n")
    return id


# ── The prompt's start ──────────────────────────────────────────────────────


def run(resonate: Resonate, server: Server, args: argparse.Namespace) -> int:
    """The prompt, or a batch run: ``resonate.run`` starts a computation."""
    if not server.url:
        print("embedded: no Resonate server, running everything in this process", file=sys.stderr)
    interactive_use = not args.expressions and not args.id and sys.stdin.isatty()
    if server.link and not interactive_use:
        server.link.silent = True  # a batch run says itself, once, that it gave up waiting
    calculator = None
    try:
        calculator = Calculator(resonate, server)
        return serve(calculator, args, interactive_use)
    except Unreachable as error:
        print(f"resonator: cannot reach the Resonate server at {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        log.debug("resonator failed", exc_info=True)
        print(f"resonator: {type(error).__name__}: {error} (-vv shows more)", file=sys.stderr)
        return 1
    finally:
        if calculator is not None:
            calculator.close()


def serve(calculator: Calculator, args: argparse.Namespace, interactive_use: bool) -> int:
    """Whatever the command line asked of the prompt; the exit status."""
    if interactive_use:
        return interactive(calculator)
    calculator.connected(CONNECT_WAIT)
    if args.watch and args.id and not args.expressions:
        return 0 if watch_one(calculator, args.id) else 1
    if args.tree and args.id and not args.expressions:
        return 0 if show_tree(calculator, args.id) else 1
    if args.expressions:
        return batch(calculator, enumerate(args.expressions, start=1), args)
    return batch(calculator, lines(sys.stdin.buffer), args)
