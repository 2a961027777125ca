"""Expressions given as arguments or piped in: one value per line, in order.

Up to ``--jobs`` of them are computed at once; each value is printed as soon
as it and every value before it are known. Lines are read only as fast as
there is room for them, so a long input takes no more memory than a short
one. Errors go to stderr, in the same order; the exit status is 1 if any
expression failed.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from resonator.client.calculator import Calculator, Failed, new_id
from resonator.terminal.drawing import draw, screen, watch
from resonator.terminal.keys import CtrlC, Interrupted, exit_status

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator, Iterator

    from resonate.resonate import Resonate

    from resonator.connections import Connection

# One input line: its number, and its text (None if it is not UTF-8).
type Line = tuple[int, str | None]


def compute_all(computations: Resonate, connection: Connection, args: argparse.Namespace) -> int:
    """Every expression given or piped in, computed; the exit status."""
    return exit_status(computing(Calculator(computations, connection), args))


async def computing(calculator: Calculator, args: argparse.Namespace) -> int:
    keys = CtrlC()
    async with calculator:
        await keys.wait(calculator.ready())
        batch = Batch(calculator, args)
        lines = numbered(args.expressions) if args.expressions else piped(sys.stdin.buffer)
        try:
            return await keys.wait(batch.report_all(lines))
        except Interrupted:  # the computations go on without us
            if batch.waiting:
                ids = ", ".join(batch.waiting)
                go_on = "the computation goes on as" if len(batch.waiting) == 1 else "they go on as"
                print(f"\nstopped waiting; {go_on} {ids}", file=sys.stderr)
            raise


@dataclass(frozen=True)
class Report:
    out: str = ""  # for stdout
    err: str = ""  # for stderr
    failed: bool = False


class Batch:
    """Expressions computed ``jobs`` at a time, reported in the order they came."""

    def __init__(self, calculator: Calculator, args: argparse.Namespace) -> None:
        self.calculator = calculator
        self.args = args
        # A followed computation draws as it goes: one at a time.
        self.jobs = 1 if args.watch else args.jobs
        # Piped in, an error says which line it is about; given, it is plain.
        self.where = "" if args.expressions else "line {}: "
        self.waiting: list[str] = []  # computations under way, in the order they came

    async def report_all(self, lines: AsyncIterator[Line]) -> int:
        """Report every line's result; the exit status."""
        room = asyncio.Semaphore(self.jobs)  # a job's room is freed once it is reported
        order: asyncio.Queue[asyncio.Task[Report] | None] = asyncio.Queue()

        async def start() -> None:
            async for number, text in lines:
                await room.acquire()
                order.put_nowait(asyncio.ensure_future(self.compute_line(number, text)))
            order.put_nowait(None)

        starting = asyncio.ensure_future(start())
        status = 0
        try:
            while (job := await order.get()) is not None:
                result = await job
                self.report(result)
                status = 1 if result.failed else status
                room.release()
            await starting
        finally:
            starting.cancel()
            while not order.empty():
                if job := order.get_nowait():
                    job.cancel()
        return status

    def report(self, result: Report) -> None:
        if result.out:
            print(result.out, flush=True)
        if result.err:
            print(result.err, file=sys.stderr, flush=True)

    async def compute_line(self, number: int, text: str | None) -> Report:
        """The value (or tree, or watch) of one line, or why it has none."""
        if text is None:
            return Report(err=f"line {number}: not UTF-8 text; skipped", failed=True)
        if not text.strip() and not self.args.expressions:
            return Report()  # a blank line piped in; one given is an empty expression
        id = self.args.id or new_id()
        self.waiting.append(id)  # until it ends: when Ctrl-C stops us, it goes on
        try:
            if self.args.watch:
                await self.calculator.begin(text, id)
                result = Report(failed=not await watch(self.calculator.follow(id)))
            else:
                value = await self.calculator.compute(text, id, id_given=bool(self.args.id))
                out = str(value)
                if self.args.tree:
                    out = draw(await self.calculator.tree(id), screen())
                result = Report(out=out)
        except Failed as failure:
            result = Report(err=self.where.format(number) + str(failure), failed=True)
        self.waiting.remove(id)
        return result


async def numbered(expressions: list[str]) -> AsyncIterator[Line]:
    for number, text in enumerate(expressions, start=1):
        yield number, text


async def piped(stream: IO[bytes]) -> AsyncIterator[Line]:
    """The lines of ``stream``, read by a thread of its own one line ahead of their use."""
    loop = asyncio.get_running_loop()
    ahead: asyncio.Queue[Line | None] = asyncio.Queue(maxsize=1)

    def read() -> None:
        try:
            for line in lines(stream):
                asyncio.run_coroutine_threadsafe(ahead.put(line), loop).result()
            asyncio.run_coroutine_threadsafe(ahead.put(None), loop).result()
        except Exception:  # the loop has closed: nobody wants the rest
            return

    # A daemon: a read blocked on a terminal or pipe must not hold up the exit.
    threading.Thread(target=read, daemon=True).start()
    while (line := await ahead.get()) is not None:
        yield line


def lines(stream: IO[bytes]) -> Iterator[Line]:
    """Each line of ``stream``, numbered; its text is None if it is not UTF-8.

    Any line ending will do (LF, CRLF, a lone CR), a byte-order mark may lead,
    and the locale's encoding does not matter.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline=None)
    for number, ended in enumerate(text, start=1):
        line = ended.rstrip("\n")
        undecodable = any("\udc80" <= char <= "\udcff" for char in line)
        yield number, None if undecodable else line
