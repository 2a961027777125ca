"""The prompt's Resonate client: a line of text in, its value (or one clear error) out.

It shares one event loop with the prompt. Every computation it starts is
durable: when the prompt stops waiting for one (Ctrl-C), the computation goes
on, and the same id attaches to it again.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
import uuid
from typing import TYPE_CHECKING

import msgspec
from resonate.error import ApplicationError, ResonateError, ServerError
from rich.console import Console

from resonator.connections import ids, shut_down
from resonator.parser import ParseError, parse, render
from resonator.terminal.tree import Reader, draw
from resonator.terminal.watch import follow, show

if TYPE_CHECKING:
    from resonate.handle import ResonateHandle
    from resonate.resonate import Resonate

    from resonator.connections import Server
    from resonator.parser import Expr

log = logging.getLogger("resonator")

WINDOW = 60  # columns of a long input shown around a syntax error


class Failed(Exception):
    """Why a line has no value, as the terminal should show it."""


class Unreachable(Exception):
    """The server did not answer in time, or turned us away; the message is why, as far as known."""


class Client:
    """Computations on a Resonate client whose ``run`` starts one (or attaches to it)."""

    def __init__(self, resonate: Resonate, server: Server) -> None:
        self.resonate = resonate
        self.server = server
        self.link = server.link  # None in-process: always connected
        self.checked: asyncio.Future[str | None] | None = None

    def start(self) -> None:
        """Open the connections; in the background, check that the server can serve us."""
        self.resonate.start()
        self.checked = asyncio.ensure_future(self.check())

    async def check(self) -> str | None:
        """Why the server cannot serve us (our credentials, its ids), once it answers; or None."""
        if self.link is None:
            return None
        if denial := await self.link.answered():
            return denial
        return await ids.refusal(self.resonate, self.link.url)

    async def close(self) -> None:
        await shut_down(self.resonate)

    async def connected(self, timeout: float | None = None) -> None:
        """Wait until the server can push to us (results arrive that way)."""
        if self.link and not self.link.up.is_set():
            try:
                denial = await asyncio.wait_for(self.link.answered(), timeout)
            except TimeoutError:
                why = f" ({self.link.why})" if self.link.why else ""
                message = f"cannot reach the Resonate server at {self.link.url}{why}"
                raise Unreachable(message) from None
            if denial:
                raise Unreachable(denial)

    async def compute(self, text: str, id: str, named: bool = False) -> int:
        """The value of ``text``, computed durably as invocation ``id``; or ``Failed``.

        ``named``: the id was given, not made up here, so it may already name
        a computation of something else.
        """
        try:
            return await self.evaluate(parse(text), id, named)
        except ParseError as error:
            raise Failed(syntax_error(text, error)) from None
        except ResonateError as error:
            log.debug("invocation %s failed", id, exc_info=True)
            raise Failed(f"error: {error}") from None
        except Exception as error:
            # Not expected, so not hidden either: the type and message here,
            # the traceback with -vv; and the prompt goes on.
            log.debug("invocation %s failed unexpectedly", id, exc_info=True)
            raise Failed(f"error: {type(error).__name__}: {error}") from None

    async def evaluate(self, expr: Expr, id: str, named: bool) -> int:
        value = await self.outcome(self.resonate.run(id, "=", expr), id)
        if named:
            await self.same(expr, id)
        return value

    async def same(self, expr: Expr, id: str) -> None:
        """``ApplicationError`` unless computation ``id`` computes ``expr``.

        An id that already exists is attached to, whatever it computes, so a
        reused id must name the same expression to answer this one.
        """
        stored = (await self.resonate.promises.get(id)).param.data
        if stored and stored["args"] != msgspec.json.decode(msgspec.json.encode([expr])):
            other = render(stored["args"][0])
            raise ApplicationError(f"id {id} already names another expression: {other}")

    async def outcome(self, handle: ResonateHandle[int], id: str) -> int:
        """The value of computation ``id``, read again each time the server is back.

        While the link is down, the server may settle the computation with
        nobody to tell, or (in memory) restart and forget it, or the request
        that asked it to tell us may have been lost: after each reconnection
        the prompt asks again, and learns which.
        """
        result = asyncio.ensure_future(handle.result())
        try:
            while self.link is not None and not result.done():
                down = asyncio.ensure_future(self.link.down.wait())
                await asyncio.wait({result, down}, return_when=asyncio.FIRST_COMPLETED)
                down.cancel()
                if result.done():
                    break
                await self.link.up.wait()
                try:
                    record = await self.server.listen(id)
                except ServerError as error:
                    if error.code != 404:
                        raise
                    raise ApplicationError(
                        f"the server no longer has computation {id}: it restarted and forgot "
                        "it (running the same id again computes everything again)"
                    ) from None
                if record.state == "resolved" and isinstance(record.value.data, int):
                    return record.value.data
                if record.state != "pending":
                    raise ApplicationError(f"computation {id} ended {record.state}")
            return await result
        finally:
            result.cancel()

    async def begin(self, text: str, id: str, named: bool = False) -> None:
        """Start computation ``id`` of ``text`` (or attach to it) without waiting for it."""
        try:
            expr = parse(text)
            await self.resonate.run(id, "=", expr).id()
            if named:
                await self.same(expr, id)
        except ParseError as error:
            raise Failed(syntax_error(text, error)) from None
        except ResonateError as error:
            raise Failed(f"error: {error}") from None

    def reader(self) -> Reader:
        return Reader(self.resonate.promises, self.server.network, self.server.token)

    async def tree(self, id: str) -> str:
        """The promise tree of invocation ``id`` as the server has it now."""
        try:
            root = await self.reader().tree(id)
        except ResonateError as error:
            raise Failed(f"error: {error}") from None
        if root is None:
            raise Failed(f"error: there is no promise {id}")
        return draw(root)

    async def watch(self, id: str) -> bool:
        """Show the tree of ``id`` as it changes, until its root settles; True if it resolved."""
        try:
            last = await show(follow(self.reader(), id), Console())
        except ResonateError as error:
            raise Failed(f"error: {error}") from None
        return last is not None and last.state == "resolved"


def new_id() -> str:
    """A fresh invocation id: 48 random bits, short enough to read in a tree."""
    return uuid.uuid4().hex[:12]


# ── Saying what went wrong ──────────────────────────────────────────────────


def syntax_error(text: str, error: ParseError) -> str:
    """The message, the input as a terminal shows it, and a caret under the column.

    Control characters are shown escaped (``\\x00``), in the input and in the
    message alike; tabs as the spaces they would take; and a long input as a
    window around the column.
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
    message = "".join(shown(char) for char in error.message)
    return f"syntax error: {message}\n  {line}\n  {' ' * caret}^"


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
