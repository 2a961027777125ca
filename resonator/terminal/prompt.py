"""The ❯ prompt: type an expression, see its value. And where every run of the prompt starts.

The prompt and its Resonate client share one event loop. In a terminal that
can be drawn on, the prompt is prompt_toolkit's: what the client says while
you type appears above it, a syntax error shows in the bottom toolbar before
you press Enter, and history is kept between sessions. On a dumb terminal it
is a plain line, edited by the terminal itself. Expressions given as
arguments or piped in need no prompt at all (``batch.py``).

Ctrl-C stops whatever it interrupts, never a computation: the line being
typed, the wait for a value (the computation goes on), or a ``:watch``.
Ctrl-D or ``:q`` quits.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resonator.parser import ParseError, parse
from resonator.terminal.batch import Batch, given, piped
from resonator.terminal.client import Client, Failed, Unreachable, new_id, shown

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable

    from prompt_toolkit.history import History
    from resonate.resonate import Resonate

    from resonator.connections import Server

log = logging.getLogger("resonator")

CONNECT_WAIT = 5.0  # seconds a batch run waits for its server before giving up
QUIT = (":q", ":quit")
HELP = """\
Type an expression such as (1 + 2) * (3 - 4), or a command:
  :tree [ID]   the promises of the last computation (or of ID), as the server has them
  :watch [ID]  the same, redrawn as it changes, until it settles
  :help        this
  :q           quit (so does Ctrl-D)
Ctrl-C clears the line, or stops waiting for a value (the computation goes on)."""


def run(resonate: Resonate, server: Server, args: argparse.Namespace) -> int:
    """The prompt, or a batch run: ``resonate.run`` starts a computation."""
    if not server.url:
        print("embedded: no Resonate server, running everything in this process", file=sys.stderr)
    interactive = not args.expressions and not args.id and sys.stdin.isatty()
    if server.link and not interactive:
        server.link.silent = True  # a batch run says itself, once, that it gave up waiting
    try:
        return asyncio.run(serve(Client(resonate, server), args, interactive))
    except Exception as error:
        log.debug("resonator failed", exc_info=True)
        print(f"resonator: {type(error).__name__}: {error} (-vv shows more)", file=sys.stderr)
        return 1


async def serve(client: Client, args: argparse.Namespace, interactive: bool) -> int:
    """Whatever the command line asked of the prompt; the exit status."""
    keys = CtrlC()
    client.start()
    try:
        if interactive:
            return await prompt(client, keys)
        return await keys.wait(batch(client, args))
    except Interrupted:
        return 130
    except Unreachable as error:
        print(f"resonator: {error}", file=sys.stderr)
        return 1
    finally:
        await client.close()


# ── Ctrl-C ──────────────────────────────────────────────────────────────────


class Interrupted(Exception):
    """Ctrl-C stopped a wait."""


class CtrlC:
    """Ctrl-C, on the event loop: it stops the one wait it interrupts, and nothing else."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.waiting: asyncio.Future[Any] | None = None
        self.waits = 0  # waits begun so far: the number of the current one
        self.pressed = False
        signal.signal(signal.SIGINT, self.press)

    def press(self, *_: object) -> None:
        # A signal handler runs at once, between two steps of whatever runs:
        # so the press is tied to the wait it interrupted, and not to the one
        # that may have begun by the time the loop acts on it.
        self.loop.call_soon_threadsafe(self.stop, self.waits)

    def stop(self, wait: int) -> None:
        if wait == self.waits and self.waiting is not None:
            self.pressed = True
            self.waiting.cancel()

    async def wait[T](self, awaitable: Awaitable[T]) -> T:
        """What ``awaitable`` gives; ``Interrupted`` if Ctrl-C comes first."""
        waiting: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        self.waits += 1
        self.waiting, self.pressed = waiting, False
        try:
            return await waiting
        except asyncio.CancelledError:
            if self.pressed:
                raise Interrupted from None
            raise
        finally:
            self.waiting = None


# ── Batch: arguments or piped lines ─────────────────────────────────────────


async def batch(client: Client, args: argparse.Namespace) -> int:
    await client.connected(CONNECT_WAIT)
    assert client.checked is not None
    if why := await client.checked:
        print(f"resonator: {why}", file=sys.stderr)
        return 1
    if not args.expressions and args.id and (args.tree or args.watch):
        return await follow(client, args)
    run = Batch(client, args)
    try:
        return await run.run(
            given(args.expressions) if args.expressions else piped(sys.stdin.buffer)
        )
    except asyncio.CancelledError:  # Ctrl-C: the computations go on without us
        if run.waiting:
            ids = ", ".join(run.waiting)
            go_on = "the computation goes on as" if len(run.waiting) == 1 else "they go on as"
            print(f"\nstopped waiting; {go_on} {ids}", file=sys.stderr)
        raise


async def follow(client: Client, args: argparse.Namespace) -> int:
    """``--tree --id ID`` or ``--watch --id ID``: a computation that already exists."""
    try:
        if args.watch:
            return 0 if await client.watch(args.id) else 1
        print(await client.tree(args.id), flush=True)
    except Failed as failure:
        print(failure, file=sys.stderr)
        return 1
    return 0


# ── Interactive: the ❯ prompt ───────────────────────────────────────────────


async def prompt(client: Client, keys: CtrlC) -> int:
    """The ❯ prompt, until Ctrl-D or :q; or until the server turns out unable to serve us."""
    print("Resonator: every step of every calculation is a durable promise.")
    print(HELP + "\n", flush=True)
    drawn = sys.stdout.isatty() and os.environ.get("TERM", "dumb") not in ("dumb", "unknown")
    lines = Drawn() if drawn else Plain()
    session = asyncio.ensure_future(converse(client, keys, lines))
    assert client.checked is not None
    either: list[asyncio.Future[Any]] = [session, client.checked]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not session.done() and (why := client.checked.result()):
        session.cancel()
        print(f"resonator: {why}", file=sys.stderr)
        return 1
    return await session


async def converse(client: Client, keys: CtrlC, lines: Drawn | Plain) -> int:
    last = ""  # the id of the last computation started, for :tree and :watch
    while True:
        try:
            text = (await keys.wait(lines.read())).strip()
        except Interrupted:
            continue
        except EOFError:
            print()
            return 0
        except UnicodeDecodeError:
            print("error: that line is not UTF-8 text", file=sys.stderr)
            continue
        if text in QUIT:
            return 0
        if text in ("quit", "exit") or text.startswith(":"):
            await command(client, keys, text, last)
        elif text:
            last = await evaluate(client, keys, text) or last


async def evaluate(client: Client, keys: CtrlC, text: str) -> str | None:
    """Compute ``text`` and show its value; the id of the computation, if one started."""
    link = client.link
    if link and not link.up.is_set():
        print(f"waiting for the server at {link.url} (Ctrl-C stops waiting)")
        try:
            await keys.wait(client.connected())
        except Interrupted:
            print("\nstopped waiting for the server; nothing was started\n")
            return None
    id = new_id()
    try:
        value = await keys.wait(client.compute(text, id))
    except Failed as failure:
        print(failure, file=sys.stderr)
        return None
    except Interrupted:
        print(f"\nstopped waiting; the computation goes on as {id}\n")
        return id
    print(f"\n{text}\n= {value}\n")
    return id


async def command(client: Client, keys: CtrlC, text: str, last: str) -> None:
    """Answer a line that is not an expression."""
    name, _, argument = text.partition(" ")
    id = argument.strip() or last
    if name in ("quit", "exit"):
        print("Ctrl-D or :q quits.")
    elif name == ":help":
        print(HELP)
    elif name not in (":tree", ":watch"):
        print(f"unknown command {name}; :help lists the commands")
    elif not id:
        print(f"{name} shows the last computation, and there is none yet: try {name} ID")
    else:
        try:
            if name == ":tree":
                print(await keys.wait(client.tree(id)), flush=True)
            else:
                await keys.wait(client.watch(id))
        except Failed as failure:
            print(failure, file=sys.stderr)
        except Interrupted:
            if name == ":watch":
                print(f"\nstopped watching; the computation goes on as {id}\n")


class Drawn:
    """Lines from prompt_toolkit, for a terminal that can be drawn on."""

    def __init__(self) -> None:
        # Imported here: piped input, arguments and dumb terminals need none of it.
        from prompt_toolkit import PromptSession

        self.session: PromptSession[str] = PromptSession(
            history=history(), bottom_toolbar=self.toolbar
        )

    async def read(self) -> str:
        from prompt_toolkit.patch_stdout import patch_stdout

        # Whatever is printed while the prompt is drawn goes above it.
        with patch_stdout(raw=True):
            try:
                return await self.session.prompt_async("❯ ", handle_sigint=False)
            except KeyboardInterrupt:  # Ctrl-C, a key in the prompt's raw mode
                raise Interrupted from None

    def toolbar(self) -> str:
        """The parser's verdict on the line as it is typed."""
        text = self.session.default_buffer.text
        if not text.strip() or text.lstrip().startswith(":"):
            return " Enter computes it; :help lists the commands; Ctrl-D quits"
        try:
            parse(text)
        except ParseError as error:
            return f" column {error.column + 1}: {''.join(map(shown, error.message))}"
        return " Enter computes it"


def history() -> History:
    """The prompt's history, kept under the user's state directory if it can be."""
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    try:
        (state / "resonator").mkdir(parents=True, exist_ok=True)
        return FileHistory(state / "resonator" / "history")
    except OSError:
        return InMemoryHistory()


class Plain:
    """Lines from a terminal that cannot be drawn on: it edits the line itself."""

    async def read(self) -> str:
        print("❯ ", end="", flush=True)
        try:
            with contextlib.redirect_stdout(Above()), contextlib.redirect_stderr(Above()):
                return await self.line()
        except asyncio.CancelledError:  # Ctrl-C: the terminal has shown ^C
            print()
            raise

    async def line(self) -> str:
        loop = asyncio.get_running_loop()
        fd = sys.stdin.fileno()
        typed: asyncio.Future[bytes] = loop.create_future()

        def ready() -> None:
            # The terminal hands over a whole line at a time: this never blocks.
            if not typed.done():
                typed.set_result(os.read(fd, 65536))

        loop.add_reader(fd, ready)
        try:
            data = await typed
        finally:
            loop.remove_reader(fd)
        if not data:
            raise EOFError
        return data.decode("utf-8")


class Above(io.StringIO):
    """Lines printed while a plain ❯ waits: each on a line of its own, with a ❯ after it."""

    def write(self, text: str) -> int:
        sys.__stdout__.write(f"\n{text.rstrip()}\n❯ ")  # type: ignore[union-attr]
        sys.__stdout__.flush()  # type: ignore[union-attr]
        return len(text)
