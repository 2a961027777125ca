"""A worker: take the tasks addressed to its group and pid until told to stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING

from resonator.connections import shut_down

if TYPE_CHECKING:
    from resonate.resonate import Resonate

    from resonator.connections import Connection
    from resonator.connections.link import Link

log = logging.getLogger("resonator")


def work(resonate: Resonate, connection: Connection) -> int:
    """Take work until SIGINT or SIGTERM; the exit status."""
    name = f"group={connection.group} pid={connection.pid}"
    try:
        return asyncio.run(until_stopped(resonate, connection, name))
    except Exception as error:
        log.debug("the worker failed", exc_info=True)
        log.error("resonator: %s: %s (-vv shows more)", type(error).__name__, error)
        return 1


async def until_stopped(resonate: Resonate, connection: Connection, name: str) -> int:
    serving = asyncio.ensure_future(take_work(resonate, connection, name))
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, serving.cancel)
    resonate.start()
    try:
        status = await serving
    except asyncio.CancelledError:
        status = 0
    finally:
        await shut_down(resonate)
    if status == 0:
        log.info("worker stopped: %s", name)
    return status


async def take_work(resonate: Resonate, connection: Connection, name: str) -> int:
    """Say that it started once its server answers, then serve until cancelled."""
    link = connection.link
    assert link is not None
    saying = asyncio.ensure_future(started(link, name))
    try:
        while denial := await link.turned_away():
            # A server that refuses the SDK's ids would send this worker its
            # tasks again and again: it stops instead, at once (docs/servers.md).
            if link.incompatible:
                log.error("resonator: %s; this worker stops", denial)
                return 1
            # Turned away for its credentials: said, and the stream is asked
            # again now and then, quietly, in case the server is given this token.
            log.error("resonator: %s; retrying", denial)
            await link.up.wait()
        await asyncio.Future()  # until cancelled
        return 0
    finally:
        saying.cancel()


async def started(link: Link, name: str) -> None:
    """Say so the moment work can reach this worker, before any of it runs.

    Not after the check of the server's ids (``turned_away``): work that was
    waiting for this worker comes with the server's first answer, and the
    check's request races the requests that take it (on Postgres the first
    drain even hands the work over before it says that the server answered).
    A task takes a request to the server before its function runs; this
    takes none.
    """
    await link.up.wait()
    # Its process number is what to `kill -9` to crash it (docs/distributed.md).
    log.info("worker started: %s (process %d)", name, os.getpid())
