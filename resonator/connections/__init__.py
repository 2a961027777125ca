"""How a process reaches its Resonate server, and how it knows that it can.

The URL picks the connection:

- none: the SDK's in-process server, on the indexed model of
  ``servers/model.py``;
- ``http://`` or ``https://``: a Resonate server (``resonate dev``, or the
  stand-in ``resonator-devserver``): requests over HTTP, and a Server-Sent
  Events stream on which the server pushes work and results (``sse.py``);
- ``postgresql://`` or ``postgres://``: Resonate on Postgres (resonate-pg,
  ``postgres.py``).

``Link`` (``link.py``) follows the channel on which work and results reach
this process, and says when it breaks and when it is back.

A server that asks for a token gets ``RESONATE_TOKEN`` (the variable the SDK
reads) on every request and stream of every process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.error
import urllib.request
from datetime import timedelta
from typing import TYPE_CHECKING

from resonate.connections import HttpConnection, LocalConnection
from resonate.resonate import DEFAULT_TTL, HEARTBEAT_INTERVAL_DIVISOR, Resonate
from resonate.send import Sender
from resonate.transport import Transport

from resonator.connections.heartbeat import HeartbeatPerOrigin
from resonator.connections.link import BACKOFF, Link
from resonator.connections.sse import KeepListening
from resonator.servers.model import IndexedServerState

if TYPE_CHECKING:
    from resonate.heartbeat import Heartbeat
    from resonate.types import PromiseRecord
    from resonate_base.connections import Network, Source

log = logging.getLogger("resonator")


class Server:
    """Where a process's server is, how it fares, and the connection to it."""

    def __init__(self, url: str | None, keep: int | None = None) -> None:
        self.url = url  # None: the SDK's in-process server, in this process
        self.token = os.environ.get("RESONATE_TOKEN") or None
        # Told whether the server can reach us (None in-process: it always can).
        self.link = Link(url) if url else None
        self.keep = keep  # in-process: settled computations kept (None: all)
        self.network: Network | None = None
        self.sender: Sender | None = None  # requests of our own, beside the SDK's
        self.address = ""  # where the server pushes to this process alone

    def client(self, group: str, pid: str, ttl: float | None = None) -> Resonate:
        """A Resonate client for this process, not started yet.

        ``ttl`` is the lease on a task in seconds (None: the SDK's): how soon
        the work of a process that died is handed out again.
        """
        network, sources = self.connections(group, pid)
        # The token goes in each request's head too: the real server reads it there.
        self.sender = Sender(Transport(network), self.token)
        self.address = sources[0].unicast()
        lease = timedelta(seconds=ttl) if ttl else DEFAULT_TTL
        return Resonate(
            network=network,
            sources=sources,
            group=group,
            pid=pid,
            ttl=lease,
            token=self.token,  # in the head of every request it sends
            heartbeat=self.heartbeat(self.sender, pid, lease),
            # The SDK's periodic check of awaited promises is off: it takes a
            # promise that is still being created for one that is gone (see
            # docs/sdk-0.4.md). The prompt checks after each reconnection instead.
            subscription_refresh_secs=0,
            autostart=False,
        )

    def heartbeat(self, sender: Sender, pid: str, lease: timedelta) -> Heartbeat | None:
        """What renews this process's leases: see ``heartbeat.py`` (None: the SDK's)."""
        if self.url is None:
            return None  # in-process, no lease lapses
        every = int(lease.total_seconds() * 1000) // HEARTBEAT_INTERVAL_DIVISOR
        return HeartbeatPerOrigin(pid, max(every, 1), sender)

    async def listen(self, id: str) -> PromiseRecord:
        """Promise ``id`` as the server has it, which is to tell this process when it settles.

        The SDK asks this once, as it starts a computation. If that request
        was lost in an outage (on Postgres, a request cut off mid-way is
        rolled back when the database ends its session), nobody would ever
        tell this process; asked again, the server has it for sure.
        """
        assert self.sender is not None, "no client yet"
        return await self.sender.promise_register_listener(id, self.address)

    def connections(self, group: str, pid: str) -> tuple[Network, list[Source]]:
        """The SDK connections (network, sources) for this process."""
        network: Network
        sources: list[Source]
        if self.url is None:
            local = LocalConnection(pid=pid, group=group)
            local.state = IndexedServerState(self.keep)
            network, sources = local, [local]
        elif self.url.startswith(("postgresql://", "postgres://")):
            # psycopg takes a while to import: only a process on Postgres pays for it.
            from resonator.connections.postgres import KeepSweeping

            assert self.link is not None
            database = KeepSweeping(self.url, group, pid, self.link)
            network, sources = database, [database]
        else:
            assert self.link is not None
            network = HttpConnection(self.url, auth=self.token, backoff=BACKOFF)
            sources = [KeepListening(self.url, group, pid, self.link, self.token)]
        self.network = network
        return network, sources


def healthy(url: str) -> bool:
    """True if a Resonate server answers ``GET /health`` at ``url`` within half a second."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=0.5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


async def shut_down(resonate: Resonate) -> None:
    """Stop a client, letting go of whatever task is still running here.

    The SDK closes its connections, then waits for the work in hand. An
    operator still taking its time has nobody left to answer to, so it is
    not waited for long: its lease lapses and the server gives the task to
    another worker. Every task left on the loop is cancelled and awaited, so
    nothing is left pending when the loop closes.
    """
    try:
        await asyncio.wait_for(resonate.stop(), timeout=1)
    except TimeoutError:
        log.debug("work was still running at shutdown; it is left to its lease")
    others = asyncio.all_tasks() - {asyncio.current_task()}
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
