"""A Resonate client's computations: a line of text in, its value (or one clear error) out.

The ❯ prompt, a batch, ``--tree``/``--watch`` and the page each run on a
``Calculator``: it opens the connections, waits for the server (the one
place that does), starts computations or attaches to them, and reads their
promise trees. Every computation it starts is durable: when its caller stops
waiting for one (Ctrl-C, a page closed), the computation goes on, and the
same id attaches to it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import uuid
from typing import TYPE_CHECKING, Self

import msgspec
from resonate.codec import decode_settled
from resonate.error import ApplicationError, ResonateError, ServerError

from resonator.client.text import escaped, not_computed
from resonator.client.trees import Reader, changes, tally
from resonator.connections import shut_down
from resonator.parser import ParseError, parse, render

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from resonate.handle import ResonateHandle
    from resonate.resonate import Resonate

    from resonator.client.trees import Node
    from resonator.connections import Connection
    from resonator.parser import Expr

log = logging.getLogger("resonator")

CONNECT_WAIT = 5.0  # seconds a computation waits for its server to answer before giving up


class Failed(Exception):
    """Why a line has no value, as a person should read it."""


class Unreachable(Exception):
    """The server did not answer in time, or cannot serve us; the message is why."""


class Calculator:
    """Text in, values out: computations started (or attached to) with ``computations.run``.

    ``computations`` is the process's ``Resonate``, with the options every
    computation's root is started with.
    """

    def __init__(self, computations: Resonate, connection: Connection) -> None:
        self.computations = computations
        self.connection = connection
        self.link = connection.link  # None in-process: always connected
        if self.link:
            self.link.gives_up = True  # a terminal says itself why it could not connect

    async def __aenter__(self) -> Self:
        if self.link is None:
            print(
                "embedded: no Resonate server, running everything in this process", file=sys.stderr
            )
        self.computations.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await shut_down(self.computations)

    async def ready(self, wait: float | None = CONNECT_WAIT) -> None:
        """Once the server can push to us and serve us; else ``Unreachable``, saying why.

        ``wait``: how many seconds it may take to answer (None: as long as it takes).
        """
        if self.link is None:
            return
        try:
            denial = await asyncio.wait_for(self.link.turned_away(), wait)
        except TimeoutError:
            why = f" ({self.link.why})" if self.link.why else ""
            raise Unreachable(f"cannot reach the Resonate server at {self.link.url}{why}") from None
        if denial:
            raise Unreachable(denial)

    async def compute(self, text: str, id: str, id_given: bool = False) -> int:
        """The value of ``text``, computed durably as invocation ``id``; or ``Failed``.

        ``id_given``: the id was given, not made up here, so it may already name
        a computation of another expression.
        """
        try:
            return await self.value(await self.started(text, id, id_given), id)
        except ParseError as error:
            raise Failed(not_computed(text, error)) from None
        except ResonateError as error:
            log.debug("invocation %s failed", id, exc_info=True)
            raise Failed(f"error: {escaped(str(error))}") from None
        except Exception as error:
            # Not expected, so not hidden either: the type and message here,
            # the traceback with -vv; and the prompt goes on.
            log.debug("invocation %s failed unexpectedly", id, exc_info=True)
            raise Failed(f"error: {type(error).__name__}: {escaped(str(error))}") from None

    async def started(self, text: str, id: str, id_given: bool) -> ResonateHandle[int]:
        """Computation ``id`` of ``text``, started or attached to; a given ``id`` claimed first."""
        expr = parse(text)
        if id_given:
            await self.claim(id, expr)
        return self.computations.run(id, "=", expr)

    async def claim(self, id: str, expr: Expr) -> None:
        """Refuse ``id`` if it already names a computation of another expression.

        A run with an id that exists attaches to it, whatever it computes: so
        the check comes first, before anything is computed.
        """
        try:
            stored = (await self.computations.promises.get(id)).param.data
        except ServerError as error:
            if error.code == 404:
                return  # a new id
            raise
        if stored and stored["args"] != msgspec.json.decode(msgspec.json.encode([expr])):
            other = render(stored["args"][0])
            raise ApplicationError(f"id {id} already names another expression: {other}")

    async def value(self, handle: ResonateHandle[int], id: str) -> int:
        """The value of computation ``id``, read again each time the server is back.

        While the link is down, the server may settle the computation with
        nobody to tell, or (in memory) restart and forget it, or the request
        that asked it to tell us may have been lost: after each reconnection
        the client asks again, and learns which.
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
                    record = await self.connection.listen(id)
                except ServerError as error:
                    if error.code != 404:
                        raise
                    raise ApplicationError(
                        f"the server no longer has computation {id}: it restarted and forgot "
                        "it (running the same id again computes everything again)"
                    ) from None
                if record.state != "pending":
                    # As the server keeps it, encoded: decoded as the SDK
                    # decodes a settled promise (a rejection raises).
                    value: int = decode_settled(
                        self.computations.promises.codec.decode_promise(record)
                    )
                    return value
            return await result
        finally:
            result.cancel()

    async def begin(self, text: str, id: str, id_given: bool = False) -> None:
        """Start computation ``id`` of ``text`` (or attach to it) without waiting for it."""
        try:
            await (await self.started(text, id, id_given)).id()
        except ParseError as error:
            raise Failed(not_computed(text, error)) from None
        except ResonateError as error:
            raise Failed(f"error: {escaped(str(error))}") from None

    def reader(self) -> Reader:
        """A reader of this server's promise trees, which remembers nothing yet."""
        return Reader(self.connection)

    async def tree(self, id: str) -> Node:
        """The promise tree of computation ``id`` as the server has it now; or ``Failed``."""
        try:
            root = await self.reader().tree(id)
        except ResonateError as error:
            raise Failed(f"error: {escaped(str(error))}") from None
        if root is None:
            raise Failed(f"error: there is no promise {escaped(id)}")
        return root

    async def follow(self, id: str) -> AsyncIterator[Node]:
        """Each new state of the tree of ``id``, until its root settles; or ``Failed``."""
        try:
            async for root in changes(self.reader(), id):
                yield root
        except ResonateError as error:
            raise Failed(f"error: {escaped(str(error))}") from None

    async def progress(self, id: str, text: str, every: float) -> AsyncIterator[tuple[int, int]]:
        """How far computation ``id`` of ``text`` is, every ``every`` seconds.

        (promises settled, promises in all): all those its tree will have,
        not those created so far, which grow in number as it goes.
        """
        try:
            in_all = promises(parse(text))
        except ParseError:
            return  # no computation: ``compute`` says why
        reader = self.reader()
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(ResonateError):  # not created yet, or the server away
                if root := await reader.tree(id):
                    settled, _ = tally(root)
                    yield settled, in_all


def promises(expr: Expr) -> int:
    """How many promises computing ``expr`` takes: its own, and for an operation
    those of its operands and one for its operator. (Counted with a stack: an
    expression may be nested deeper than Python recurses.)"""
    count, left = 0, [expr]
    while left:
        match left.pop():
            case [_, lhs, rhs]:
                count += 2
                left += [lhs, rhs]
            case _:
                count += 1
    return count


def new_id() -> str:
    """A fresh invocation id: 48 random bits, short enough to read in a tree."""
    return uuid.uuid4().hex[:12]
