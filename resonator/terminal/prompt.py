"""The ❯ prompt: type an expression, see its value.

The prompt and the SDK share one event loop. In a terminal that
can be drawn on, the prompt is prompt_toolkit's: what Resonator says while
you type appears above it, a syntax error shows in the bottom toolbar before
you press Enter, and history is kept between sessions. On a dumb terminal it
is a plain line, edited by the terminal itself. (Expressions given as
arguments or piped in need no prompt: ``batch.py``; nor do ``--tree`` and
``--watch`` of a computation that exists: ``follow.py``.)

Ctrl-C stops whatever it interrupts, never a computation: the line being
typed, the wait for a value (the computation goes on), or a ``:watch``.
Ctrl-D or ``:q`` quits.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text

from resonator.client.calculator import Calculator, Failed, new_id
from resonator.client.text import escaped
from resonator.parser import MAX_LENGTH, ParseError, parse
from resonator.terminal.drawing import draw, screen, watch
from resonator.terminal.keys import CtrlC, Interrupted, exit_status

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable

    from prompt_toolkit.history import History
    from resonate.resonate import Resonate

    from resonator.connections import Connection

QUIT = (":q", ":quit")
EVERY = 0.5  # seconds between two looks at how far a computation is
BEHIND = "(Ctrl-C stops waiting; the computation goes on)"
HISTORY = 1000  # lines kept in the history file
HELP = """\
Type an expression such as (1 + 2) * (3 - 4), or a command:
  :tree [ID]   the promises of the last computation (or of ID), as the server has them
  :watch [ID]  the same, redrawn as it changes, until it settles
  :help        this
  :q           quit (so does Ctrl-D)
Ctrl-C clears the line, or stops waiting for a value (the computation goes on)."""


def converse(computations: Resonate, connection: Connection) -> int:
    """The ❯ prompt, until Ctrl-D or :q; ``computations.run`` starts a computation."""
    return exit_status(Conversation(Calculator(computations, connection)).held())


class Conversation:
    """The ❯ prompt's session: lines read, each answered by the ``Calculator``."""

    def __init__(self, calculator: Calculator) -> None:
        self.calculator = calculator
        self.last = ""  # the id of the last computation started, for :tree and :watch

    async def held(self) -> int:
        """Once the server can serve us, read lines and answer each; the exit status."""
        self.keys = CtrlC()
        async with self.calculator:
            # Decided before the ❯ is drawn: a server that cannot serve us ends
            # the prompt before anything is typed into it.
            await self.keys.wait(self.calculator.ready())
            print("Resonator: every step of every calculation is a durable promise.")
            print(HELP + "\n", flush=True)
            term = os.environ.get("TERM", "dumb")
            drawn = sys.stdout.isatty() and term not in ("dumb", "unknown")
            lines = DrawnPrompt() if drawn else PlainPrompt()
            while True:
                try:
                    text = (await self.keys.wait(lines.read())).strip()
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
                    await self.command(text)
                elif text:
                    await self.compute(text, shown=drawn)

    async def compute(self, text: str, shown: bool) -> None:
        """Compute ``text`` and show its value.

        ``shown``: the terminal can be drawn on, and shows how far the
        computation is while it waits.
        """
        link = self.calculator.link
        if link and not link.up.is_set():
            try:
                await self.keys.wait(self.waiting_for_the_server(link.url))
            except Interrupted:
                print("\nstopped waiting for the server; nothing was started\n")
                return
        id = new_id()
        computing = self.calculator.compute(text, id)
        try:
            value = await self.keys.wait(self.progress(id, text, computing) if shown else computing)
        except Failed as failure:
            print(failure, file=sys.stderr)
            return
        except Interrupted:
            print(f"\nstopped waiting; the computation goes on as {id}\n")
        else:
            print(f"= {value}\n")  # under the line typed, which the terminal shows
        self.last = id

    async def waiting_for_the_server(self, url: str) -> None:
        # Said from within the wait, which Ctrl-C is then sure to stop: said
        # before it began, a Ctrl-C pressed at once could come before it, and be lost.
        print(f"waiting for the server at {url} (Ctrl-C stops waiting)")
        await self.calculator.ready(None)

    async def progress(self, id: str, text: str, computing: Awaitable[int]) -> int:
        """What ``computing`` gives; meanwhile, under the line typed, how far ``id`` is."""
        from rich.live import Live

        status = Text("computing", style="dim")
        # Transient: it goes with the answer. Lines printed meanwhile go above it.
        with Live(status, transient=True, auto_refresh=False) as live:

            async def follow() -> None:
                async for settled, in_all in self.calculator.progress(id, text, EVERY):
                    status.plain = f"{settled} of {in_all} promises settled {BEHIND}"
                    live.refresh()

            following = asyncio.ensure_future(follow())
            try:
                return await computing
            finally:
                following.cancel()

    async def command(self, text: str) -> None:
        """Answer a line that is not an expression."""
        name, _, argument = text.partition(" ")
        id = argument.strip() or self.last
        if name in ("quit", "exit"):
            print("Ctrl-D or :q quits.")
        elif name == ":help":
            print(HELP)
        elif name in QUIT:
            print(f"{name} takes nothing after it: type {name} alone to quit")
        elif name not in (":tree", ":watch"):
            print(f"unknown command {escaped(name)}; :help lists the commands")
        elif not id:
            print(f"{name} shows the last computation, and there is none yet: try {name} ID")
        else:
            try:
                if name == ":tree":
                    root = await self.keys.wait(self.calculator.tree(id))
                    print(draw(root, screen()), flush=True)
                else:
                    await self.keys.wait(watch(self.calculator.follow(id)))
            except Failed as failure:
                print(failure, file=sys.stderr)
            except Interrupted:
                if name == ":watch":
                    print(f"\nstopped watching; the computation goes on as {id}\n")


class DrawnPrompt:
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
            where = "" if error.column is None else f" column {error.column + 1}:"
            return f"{where} {escaped(error.message)}"
        return " Enter computes it"


def history() -> History:
    """The prompt's history, kept under the user's state directory if it can be."""
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    class KeptHistory(FileHistory):
        """The lines that could be expressions (no longer than the parser takes), the last ones.

        A line too long to take is not kept, and the file keeps the last
        ``HISTORY`` lines: it is rewritten without the older ones, once, as
        the prompt starts.
        """

        def store_string(self, string: str) -> None:
            if len(string) <= MAX_LENGTH:
                super().store_string(string)

        def load_history_strings(self) -> Iterable[str]:
            newest = list(super().load_history_strings())
            if len(newest) > HISTORY:
                newest = newest[:HISTORY]
                os.unlink(self.filename)
                for string in reversed(newest):
                    super().store_string(string)
            return newest

    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    try:
        (state / "resonator").mkdir(parents=True, exist_ok=True)
        return KeptHistory(state / "resonator" / "history")
    except OSError:
        return InMemoryHistory()


class PlainPrompt:
    """Lines from a terminal that cannot be drawn on: it edits the line itself."""

    async def read(self) -> str:
        print("❯ ", end="", flush=True)
        try:
            with (
                contextlib.redirect_stdout(AbovePrompt()),
                contextlib.redirect_stderr(AbovePrompt()),
            ):
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


class AbovePrompt(io.StringIO):
    """Lines printed while a plain ❯ waits: each on a line of its own, with a ❯ after it."""

    def write(self, text: str) -> int:
        sys.__stdout__.write(f"\n{text.rstrip()}\n❯ ")  # type: ignore[union-attr]
        sys.__stdout__.flush()  # type: ignore[union-attr]
        return len(text)
