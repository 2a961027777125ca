"""How a process reaches its Resonate server, and how it knows that it can.

The URL picks the connection:

- none: the SDK's in-process server, on the indexed model of ``model.py``;
- ``http://`` or ``https://``: a Resonate server (``resonate dev``, or the
  stand-in ``resonator-devserver``): requests over HTTP, and a Server-Sent
  Events stream on which the server pushes work and results to this process;
- ``postgresql://`` or ``postgres://``: Resonate on Postgres (resonate-pg):
  requests are stored procedures, and pushed messages are rows this process
  drains, woken by NOTIFY. No server process stands in between.

``Link`` follows the channel on which work and results reach this process:
it tells, in one line per change, when the server cannot be reached and when
it is back, and it holds ``up`` while the channel works.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import aiohttp
from resonate.connections import HttpConnection, LocalConnection, SSEConnection
from resonate.retry import ExponentialBackoff

from resonator.model import IndexedServerState

if TYPE_CHECKING:
    from collections.abc import Callable

    from resonate.resonate import Resonate
    from resonate_base.connections import Network, Source

    # resonator.connect: (server, group, pid, process, ttl=) -> a client
    type Connect = Callable[..., Resonate]

log = logging.getLogger("resonator")

# The SDK reconnects by itself; a short ladder makes a restarted server
# noticed within seconds instead of a minute.
BACKOFF = ExponentialBackoff(initial=0.25, max_delay=2.0)


class Link:
    """Whether the server can reach this process, told once per change.

    ``greet``: say "connected to ..." on the first connection too (a worker
    says "worker started" instead). ``silent_until_connected``: say nothing
    of a server that has never answered (a batch run says so itself, once,
    when it gives up waiting).
    """

    def __init__(self, url: str, greet: bool = True, silent_until_connected: bool = False) -> None:
        self.url = url
        self.up = asyncio.Event()  # set while the channel works
        self.down = asyncio.Event()  # set while it does not, once it was tried
        self.greet = greet
        self.silent = silent_until_connected
        self.lost_reported = False

    def connected(self) -> None:
        if self.up.is_set():
            return
        self.up.set()
        self.down.clear()
        if self.greet or self.lost_reported:
            log.warning("connected to %s", self.url)
        self.greet = True
        self.silent = False
        self.lost_reported = False

    def paused(self) -> None:
        """The channel closed; another is opened at once, so nothing to say yet."""
        self.up.clear()
        self.down.set()

    def lost(self, why: Exception) -> None:
        self.up.clear()
        self.down.set()
        log.debug("connection to %s failed: %r", self.url, why)
        if self.lost_reported or self.silent:
            return
        self.lost_reported = True
        if isinstance(why, OSError | aiohttp.ClientError):
            log.warning("cannot reach the Resonate server at %s; retrying", self.url)
        else:
            log.warning(
                "the stream from the Resonate server at %s broke (%s: %s); listening again",
                self.url,
                type(why).__name__,
                why,
            )


class KeepListening(SSEConnection):
    """The SDK's SSE source, with a listener that never ends while the process runs.

    Works around a defect of resonate-sdk 0.8.1 (``SSEConnection._sse_loop`` in
    ``resonate/connections/sse.py``): its stream uses aiohttp's default session
    timeout of 300 s in total, and the ``TimeoutError`` that ends every stream
    after five minutes is not an ``aiohttp.ClientError``, so the SDK's loop
    exits silently and the process never hears from the server again. This
    loop replaces it: no total timeout on the stream, and whatever ends a
    stream, it reports it to the ``Link`` and opens another. Delete this class
    (and use ``SSEConnection``) once the SDK's loop survives both.
    """

    def __init__(self, url: str, group: str, pid: str, link: Link) -> None:
        super().__init__(url, pid=pid, group=group, backoff=BACKOFF)
        self.link = link

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self._stopped:
                raise RuntimeError("source has been stopped")
            # A stream is open for as long as the process lives; only opening
            # it may time out.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def _sse_loop(self) -> None:
        url = f"{self._url}/poll/{self._group}/{self._pid}"
        headers = self._auth_headers({"Accept": "text/event-stream"})
        attempt = 0
        while self._running:
            try:
                async with self._ensure_session().get(url, headers=headers) as response:
                    response.raise_for_status()
                    attempt = 0
                    self.link.connected()
                    await self._read_stream(response)
                self.link.paused()
            except Exception as error:  # any reason at all: say so, and listen again
                self.link.lost(error)
            # A server that ends every stream at once is not asked again at once.
            await asyncio.sleep(self._backoff.delay(attempt))
            attempt += 1


class Server:
    """Where a process's server is, how it fares, and the connection to it."""

    def __init__(self, url: str | None, link: Link | None = None, keep: int | None = None) -> None:
        self.url = url  # None: the SDK's in-process server, in this process
        self.link = link  # told whether the server can reach us (not for in-process)
        self.keep = keep  # in-process: settled computations kept (None: all)
        self.network: Network | None = None

    def connections(self, group: str, pid: str) -> tuple[Network, list[Source]]:
        """The SDK connections (network, sources) for this process."""
        network: Network
        sources: list[Source]
        if self.url is None:
            local = LocalConnection(pid=pid, group=group)
            local.state = IndexedServerState(self.keep)
            network, sources = local, [local]
        elif self.url.startswith(("postgresql://", "postgres://")):
            from resonator.postgres import KeepSweeping  # psycopg takes a while to import

            assert self.link is not None
            database = KeepSweeping(self.url, group, pid, self.link)
            network, sources = database, [database]
        else:
            assert self.link is not None
            network = HttpConnection(self.url, backoff=BACKOFF)
            sources = [KeepListening(self.url, group, pid, self.link)]
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
