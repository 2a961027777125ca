"""Ctrl-C, on the event loop: it stops the one wait it interrupts, and nothing else.

A computation is durable, so Ctrl-C never stops one: it stops the prompt's
wait for the line being typed, for a value, for the server, or a batch's
wait for its values. What it interrupted goes on without us. A terminal's
session that Ctrl-C ends exits with status 130 (``exit_status``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from resonator.client.calculator import Unreachable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Coroutine

log = logging.getLogger("resonator")


class Interrupted(Exception):
    """Ctrl-C stopped a wait."""


class CtrlC:
    """The SIGINT handler of a terminal process; ``wait`` is a wait it may stop."""

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


def exit_status(session: Coroutine[Any, Any, int]) -> int:
    """The exit status of a terminal's session, run to its end (Ctrl-C: 130)."""
    try:
        return asyncio.run(session)
    except Interrupted:
        return 130
    except Unreachable as error:
        print(f"resonator: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Whoever read the values stopped reading (`| head -1`): nothing to say,
        # as for any program at the head of a pipe. Its stdout goes nowhere from
        # now on, or Python's last flush, as it exits, would fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE  # what SIGPIPE would have ended it with
    except Exception as error:
        log.debug("resonator failed", exc_info=True)
        print(f"resonator: {type(error).__name__}: {error} (-vv shows more)", file=sys.stderr)
        return 1
