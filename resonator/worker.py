"""A worker: take the tasks addressed to its group and pid until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

from resonator.connections import ids, shut_down

if TYPE_CHECKING:
    from resonate.resonate import Resonate

    from resonator.connections import Server

log = logging.getLogger("resonator")


def run(resonate: Resonate, server: Server, group: str, pid: str) -> int:
    try:
        return asyncio.run(serve(resonate, server, f"group={group} pid={pid}"))
    except Exception as error:
        log.debug("the worker failed", exc_info=True)
        log.error("resonator: %s: %s (-vv shows more)", type(error).__name__, error)
        return 1


async def serve(resonate: Resonate, server: Server, me: str) -> int:
    """Take work until SIGINT or SIGTERM; the exit status."""
    serving = asyncio.ensure_future(take_work(resonate, server, me))
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
        log.info("worker stopped: %s", me)
    return status


async def take_work(resonate: Resonate, server: Server, me: str) -> int:
    """Say when the server first answers, then serve until cancelled."""
    assert server.link is not None
    if denial := await server.link.answered():
        # Said once; the stream is asked again now and then, quietly, in case
        # the server is given this token.
        log.error("resonator: %s; retrying", denial)
        await server.link.up.wait()
    # A server that refuses the SDK's ids would send this worker its tasks
    # again and again: it stops instead, at once (docs/servers.md).
    if why := await ids.refusal(resonate, server.link.url):
        log.error("resonator: %s; this worker stops", why)
        return 1
    log.info("worker started: %s", me)
    await asyncio.Future()  # until cancelled
    return 0
