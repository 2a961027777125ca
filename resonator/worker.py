"""A worker: take the tasks addressed to its group and pid until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Any

from resonator.cli import DEFAULT_URL
from resonator.connections import Link, Server, shut_down
from resonator.trace import Site

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from resonator.cli import Settings
    from resonator.connections import Connect

log = logging.getLogger("resonator")


def run(connect: Connect, settings: Settings) -> int:
    try:
        asyncio.run(serve(connect, settings))
    except Exception as error:
        log.debug("the worker failed", exc_info=True)
        log.error("resonator: %s: %s (-vv shows more)", type(error).__name__, error)
        return 1
    return 0


async def serve(connect: Connect, settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM; say so when started and when stopped."""
    assert settings.group is not None
    group, pid = settings.group, settings.pid
    url = settings.url or DEFAULT_URL
    link = Link(url, greet=False)
    site = Site(f"{group}/{pid}", settings.op_delay)
    resonate = connect(Server(url, link), group, pid, site, ttl=settings.ttl)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    resonate.start()
    try:
        if await first(link.up.wait(), stop.wait()):
            log.info("worker started: group=%s pid=%s", group, pid)
            await stop.wait()
    finally:
        await shut_down(resonate)
    log.info("worker stopped: group=%s pid=%s", group, pid)


async def first(wanted: Coroutine[Any, Any, Any], other: Coroutine[Any, Any, Any]) -> bool:
    """Wait for either coroutine; True when ``wanted`` finished first."""
    tasks = [asyncio.ensure_future(wanted), asyncio.ensure_future(other)]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return tasks[0] in done
