"""Whether the server can reach this process, said once per change."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import urllib.parse
from typing import TYPE_CHECKING

import aiohttp
from resonate.retry import ExponentialBackoff

from resonator.connections.ids import refused_ids

if TYPE_CHECKING:
    from resonate.send import Sender

log = logging.getLogger("resonator")

# The SDK reconnects by itself, but resonate-sdk 0.8.1's ladder doubles from
# one second up to a minute, so a server back after an outage was heard from
# up to a minute later. Ours notices it within two seconds. Delete it (and the
# backoff= it is given) once tests/test_upstream.py::
# test_the_sdks_reconnection_notices_a_server_back_within_seconds passes.
BACKOFF = ExponentialBackoff(initial=0.25, max_delay=2.0)
# For this long after it starts, a worker whose server does not answer yet
# waits for it: the server may be starting too, as under honcho.
STARTING = 10.0


class Refused(ConnectionError):
    """The server is there, but turned this process away; the message says why."""


class Unauthorized(Refused):
    """Turned away for what it showed (a token, a password), which will not change by asking again.

    The message names what the server refused: "this process's token (...)".
    """


class Link:
    """The channel on which work and results reach this process, and how it fares.

    It says "connected to ..." when the channel first works and each time it
    works again, and "cannot reach ..." once per outage. Before it first
    works, a worker says it is "waiting for" its server, and only later that
    it cannot reach it. A terminal (``gives_up``) says nothing itself: a
    server that is not there (nothing listens, its name does not resolve) or
    that turns our credentials away ends its wait at once, and ``turned_away``
    says why. A worker turned away says so and keeps asking, quietly.
    """

    def __init__(self, url: str) -> None:
        self.url = printable(url)
        # What asks the server, once it answers, whether it takes this SDK's ids.
        self.sender: Sender | None = None
        self.id_check: asyncio.Future[str | None] | None = None
        self.incompatible = False  # the server refuses this SDK's ids: asking again is in vain
        self.up = asyncio.Event()  # set while the channel works
        self.down = asyncio.Event()  # set while it does not, once it was tried
        self.denied = asyncio.Event()  # set once it is clear that waiting is in vain
        self.gives_up = False
        self.lost_reported = False
        self.waiting_reported = False
        self.ever_up = False
        self.why = ""  # why the last attempt failed, if it is known
        self.denial = ""  # what to say of a wait that is in vain
        self.born = time.monotonic()

    def connected(self) -> None:
        if self.up.is_set():
            return
        self.up.set()
        self.down.clear()
        self.denied.clear()
        self.why = ""
        if not self.ever_up or self.lost_reported:
            log.warning("connected to %s", self.url)
        self.ever_up = True
        self.lost_reported = False

    def paused(self) -> None:
        """The channel closed; another is opened at once, so nothing to say yet."""
        self.up.clear()
        self.down.set()

    def lost(self, error: Exception) -> None:
        self.up.clear()
        self.down.set()
        self.why = cause(error)
        log.debug("connection to %s failed: %r", self.url, error)
        first = not self.ever_up  # it never worked yet
        if isinstance(error, Unauthorized):
            self.denial = f"the Resonate server at {self.url} refused {error}"
            self.denied.set()
        elif first and self.gives_up and self.why:
            self.denial = f"cannot reach the Resonate server at {self.url} ({self.why})"
            self.denied.set()
        if self.lost_reported or (first and (self.gives_up or isinstance(error, Unauthorized))):
            return  # said already, or the process says it (``turned_away``)
        # Why, as far as it is known: at first, or when the server said it.
        because = f" ({self.why})" if self.why and (first or isinstance(error, Refused)) else ""
        if first and not isinstance(error, Refused) and time.monotonic() - self.born < STARTING:
            if not self.waiting_reported:
                self.waiting_reported = True
                log.warning("waiting for the Resonate server at %s%s", self.url, because)
            return
        self.lost_reported = True
        if isinstance(error, Unauthorized):
            log.warning("%s; retrying", self.denial)
        elif isinstance(error, OSError | aiohttp.ClientError) or because:
            log.warning("cannot reach the Resonate server at %s%s; retrying", self.url, because)
        else:
            log.warning(
                "the stream from the Resonate server at %s broke (%s: %s); listening again",
                self.url,
                type(error).__name__,
                error,
            )

    async def turned_away(self) -> str | None:
        """None once the server serves us; or, if waiting for it is in vain, why.

        It serves us once the channel works and the server takes this SDK's
        ids (``ids.py``), which is asked the first time it works.
        """
        while True:
            either = [asyncio.ensure_future(event.wait()) for event in (self.up, self.denied)]
            try:
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in either:
                    waiting.cancel()
            if not self.up.is_set():
                return self.denial
            if self.sender is None:
                return None
            if self.id_check is None:
                self.id_check = asyncio.ensure_future(refused_ids(self.sender, self.url))
            try:
                refused = await asyncio.shield(self.id_check)
            except Exception as error:
                log.debug("the check of the server's ids failed: %r", error)
                self.id_check = None
                if self.up.is_set():
                    return None  # it answers, but not this: nothing to hold the process back for
                continue  # cut off mid-way: asked again once the channel is back
            if refused:
                self.incompatible = True
                self.denial = refused
                self.denied.set()
            return refused


def cause(error: BaseException) -> str:
    """Why a connection failed, in a few words, when that is known for sure; else ""."""
    if isinstance(error, Refused):
        return str(error)
    seen: BaseException | None = error
    while seen is not None:
        said = str(seen)
        if isinstance(seen, ConnectionRefusedError) or "Connection refused" in said:
            return "connection refused"
        if isinstance(seen, socket.gaierror) or "failed to resolve host" in said:
            return "no such host"
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return ""


def printable(url: str) -> str:
    """``url`` as it may be shown in a log: a password in it becomes ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    place = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{place}"))
