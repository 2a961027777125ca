"""A worker: take the tasks addressed to its group and pid until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Any

from resonator.connections import shut_down

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from resonate.resonate import Resonate

    from resonator.connections import Server

log = logging.getLogger("resonator")


def run(resonate: Resonate, server: Server, group: str, pid: str) -> int:
    try:
        asyncio.run(serve(resonate, server, f"group={group} pid={pid}"))
    except Exception as error:
        log.debug("the worker failed", exc_info=True)
        log.error("resonator: %s: %s (-vv shows more)", type(error).__name__, error)
        return 1
    return 0


async def serve(resonate: Resonate, server: Server, me: str) -> None:
    """Serve until SIGINT or SIGTERM; say so when started and when stopped."""
    assert server.link is not None
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    resonate.start()
    try:
        if await first(server.link.up.wait(), stop.wait()):
            log.info("worker started: %s", me)
            await stop.wait()
    finally:
        await shut_down(resonate)
    log.info("worker stopped: %s", me)


async def first(wanted: Coroutine[Any, Any, Any], other: Coroutine[Any, Any, Any]) -> bool:
    """Wait for either coroutine; True when ``wanted`` finished first."""
    tasks = [asyncio.ensure_future(wanted), asyncio.ensure_future(other)]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return tasks[0] in done
