"""The prompt's Resonate client, on an event loop in a thread of its own.

The prompt stays plain blocking code (``input()`` with readline, and Ctrl-C
arriving as ``KeyboardInterrupt`` wherever it waits); every durable call it
makes runs on this client's loop, and is abandoned, never cancelled on the
server, when Ctrl-C stops the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import msgspec
from resonate.error import ApplicationError, ServerError
from rich.console import Console

from resonator.connections import shut_down
from resonator.parser import render
from resonator.terminal.tree import Reader, draw
from resonator.terminal.watch import follow, show

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from concurrent.futures import Future

    from resonate.handle import ResonateHandle
    from resonate.resonate import Resonate

    from resonator.connections import Server
    from resonator.parser import Expr
    from resonator.terminal.tree import Node


class Unreachable(Exception):
    """The server did not answer in time."""


class Calculator:
    """The prompt's Resonate client, on an event loop in a thread of its own."""

    def __init__(self, resonate: Resonate, server: Server) -> None:
        """``resonate``: a client, not started, whose ``run`` starts a computation."""
        self.resonate = resonate
        self.server = server
        self.link = server.link
        self.woken, self.waking = os.pipe()  # see wait()
        os.set_blocking(self.waking, False)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.call(self._start()).result()

    def _run(self) -> None:
        # Signals are for the prompt's thread: there Ctrl-C interrupts a wait.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGALRM})
        self.loop.run_forever()

    async def _start(self) -> None:
        self.resonate.start()

    def call[T](self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def wait[T](self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the client's loop; Ctrl-C or a timeout abandons it.

        The wait is a ``select()`` on a pipe that two things write to: the
        client's loop, when ``coro`` is done, and the signal machinery, when
        Ctrl-C arrives (even in the instant before ``select()`` begins, which
        a handler alone would miss). Ctrl-C only notes itself, and the
        ``KeyboardInterrupt`` is raised here, once the wait is over: raised
        inside a ``threading`` wait such as ``Future.result``, it can leave a
        lock half released, and the prompt then hangs or fails.
        """
        interrupted = False

        def interrupt(*_: object) -> None:
            nonlocal interrupted
            interrupted = True

        deadline = None if timeout is None else time.monotonic() + timeout
        previous = signal.signal(signal.SIGINT, interrupt)
        woken_by = signal.set_wakeup_fd(self.waking)
        try:
            future = self.call(coro)
            future.add_done_callback(lambda _: self.wake())
            while not (future.done() or interrupted):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                if select.select([self.woken], [], [], left)[0]:
                    os.read(self.woken, 512)  # wake-ups of earlier waits too
        finally:
            signal.set_wakeup_fd(woken_by)
            signal.signal(signal.SIGINT, previous)
        if interrupted or not future.done():
            future.cancel()
            raise KeyboardInterrupt if interrupted else TimeoutError
        return future.result()

    def wake(self) -> None:
        """End the prompt's current wait (called on the client's loop, or by a cancel)."""
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            os.write(self.waking, b"!")

    def connected(self, timeout: float | None = None) -> None:
        """Block until the server can push to us (results arrive that way)."""
        if self.link and not self.link.up.is_set():
            try:
                self.wait(self.link.up.wait(), timeout)
            except TimeoutError:
                raise Unreachable(self.link.url) from None

    def evaluate(self, expr: Expr, id: str, named: bool = False) -> int:
        """The value of ``expr``, computed durably as invocation ``id``.

        ``named``: the id was given, not made up here, so it may already name
        a computation of something else.
        """
        return self.wait(self._evaluate(expr, id, named))

    async def _evaluate(self, expr: Expr, id: str, named: bool) -> int:
        value: int = await self.outcome(self.resonate.run(id, "=", expr), id)
        if not named:
            return value
        # An id that already exists is attached to, whatever it computes, so
        # a reused id must name the same expression to answer this one.
        stored = (await self.resonate.promises.get(id)).param.data
        if stored and stored["args"] != msgspec.json.decode(msgspec.json.encode([expr])):
            other = render(stored["args"][0])
            raise ApplicationError(f"id {id} already names another expression: {other}")
        return value

    async def outcome(self, handle: ResonateHandle[int], id: str) -> int:
        """The value of computation ``id``, read again each time the server is back.

        While the link is down, the server may settle the computation with
        nobody to tell, or (in memory) restart and forget it: after each
        reconnection the prompt reads the promise to learn which.
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
                    record = await self.resonate.promises.get(id)
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

    def reader(self) -> Reader:
        return Reader(self.resonate.promises, self.server.network)

    def tree(self, id: str) -> str:
        """The promise tree of invocation ``id`` as the server has it now."""
        root = self.wait(self.reader().tree(id))
        if root is None:
            raise ApplicationError(f"there is no promise {id}")
        return draw(root)

    def start(self, expr: Expr, id: str) -> None:
        """Start computation ``id`` of ``expr`` (or attach to it), without waiting for it."""
        self.wait(self._begin(expr, id))

    async def _begin(self, expr: Expr, id: str) -> None:
        await self.resonate.run(id, "=", expr).id()

    def watch(self, id: str) -> Node | None:
        """Show the tree of ``id`` as it changes until its root settles; the last state."""
        return show(follow(self.reader(), id, self.wait), Console())

    def close(self) -> None:
        with contextlib.suppress(BaseException):
            self.call(shut_down(self.resonate)).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()
            os.close(self.woken)
            os.close(self.waking)
