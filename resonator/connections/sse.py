"""The SDK's Server-Sent Events source, with a listener that outlives every stream."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
from resonate.connections import SSEConnection
from resonate.resonate import DEFAULT_MAX_CONCURRENT_TASKS

from resonator.connections.link import BACKOFF, Unauthorized
from resonator.connections.slots import Slots

if TYPE_CHECKING:
    from collections.abc import Callable

    from resonator.connections.link import Link


class KeepListening(SSEConnection):
    """The SDK's SSE source, with a listener that never ends while the process runs.

    Works around a defect of resonate-sdk 0.8.1 (``SSEConnection._sse_loop`` in
    ``resonate/connections/sse.py``): its stream uses aiohttp's default session
    timeout of 300 s in total, and the ``TimeoutError`` that ends every stream
    after five minutes is not an ``aiohttp.ClientError``, so the SDK's loop
    exits silently and the process never hears from the server again. This
    loop replaces it: no total timeout on the stream, and whatever ends a
    stream, it reports it to the ``Link`` and opens another.

    Shown on the SDK's own listener by ``tests/test_upstream.py::
    test_the_sdks_listener_outlives_its_session_timeout``, a strict xfail: the
    day it passes, delete this class and use ``SSEConnection``.
    """

    def __init__(
        self,
        url: str,
        group: str,
        pid: str,
        link: Link,
        *,
        token: str | None = None,
        slots: Slots | None = None,
    ) -> None:
        super().__init__(url, pid=pid, group=group, auth=token, backoff=BACKOFF)
        self.link = link
        self.slots = slots or Slots(DEFAULT_MAX_CONCURRENT_TASKS)

    def recv(self, callback: Callable[[str], None]) -> None:
        super().recv(self.slots.gate(callback))  # one copy of a task's execute waits here

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
                    if response.status == 401:
                        raise self.unauthorized()
                    response.raise_for_status()
                    attempt = 0
                    self.link.connected()
                    await self._read_stream(response)
                self.link.paused()
            except Exception as error:  # any reason at all: say so, and listen again
                if not self._running:
                    return  # stopped: the stream was closed on purpose
                self.link.lost(error)
            # A server that ends every stream at once is not asked again at once.
            await asyncio.sleep(self._backoff.delay(attempt))
            attempt += 1

    def unauthorized(self) -> Unauthorized:
        if self._auth is None:
            return Unauthorized("this process, which has no token (set RESONATE_TOKEN)")
        return Unauthorized("this process's token (RESONATE_TOKEN)")
