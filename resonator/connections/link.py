"""Whether the server can reach this process, said once per change."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse

import aiohttp
from resonate.retry import ExponentialBackoff

log = logging.getLogger("resonator")

# The SDK reconnects by itself; a short ladder makes a restarted server
# noticed within seconds instead of a minute.
BACKOFF = ExponentialBackoff(initial=0.25, max_delay=2.0)


class Refused(ConnectionError):
    """The server is there, but turned this process away; the message says why."""


class Unauthorized(Refused):
    """Turned away for what it showed (a token, a password), which will not change by asking again.

    The message names what the server refused: "this process's token (...)".
    """


class Link:
    """The channel on which work and results reach this process, and how it fares.

    It says "connected to ..." when the channel first works and each time it
    works again, and "cannot reach ..." once per outage. ``silent``: say
    nothing until the first connection (a batch run says itself, once, that
    it gave up waiting). A server that turns this process's credentials away
    before it ever served it is not the Link's to say: ``answered`` tells the
    process, which stops (the prompt) or says so and waits (a worker).
    """

    def __init__(self, url: str, silent: bool = False) -> None:
        self.url = printable(url)
        self.up = asyncio.Event()  # set while the channel works
        self.down = asyncio.Event()  # set while it does not, once it was tried
        self.denied = asyncio.Event()  # set once the server turns away our credentials
        self.silent = silent
        self.lost_reported = False
        self.ever_up = False
        self.why = ""  # why the server turned the last attempt away, if it did

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
        self.silent = False
        self.lost_reported = False

    def paused(self) -> None:
        """The channel closed; another is opened at once, so nothing to say yet."""
        self.up.clear()
        self.down.set()

    def lost(self, why: Exception) -> None:
        self.up.clear()
        self.down.set()
        if isinstance(why, Refused):
            self.why = str(why)
        if isinstance(why, Unauthorized):
            self.denied.set()
            # Turned away before it was ever served: the process says so (``answered``).
            self.lost_reported |= not self.ever_up
        log.debug("connection to %s failed: %r", self.url, why)
        if self.lost_reported or self.silent:
            return
        self.lost_reported = True
        if isinstance(why, Unauthorized):
            log.warning("%s; retrying", self.denial())
        elif isinstance(why, Refused):
            log.warning("cannot reach the Resonate server at %s (%s); retrying", self.url, why)
        elif isinstance(why, OSError | aiohttp.ClientError):
            log.warning("cannot reach the Resonate server at %s; retrying", self.url)
        else:
            log.warning(
                "the stream from the Resonate server at %s broke (%s: %s); listening again",
                self.url,
                type(why).__name__,
                why,
            )

    async def answered(self) -> str | None:
        """Once the channel works, None; or why not, if the server first turns us away for good."""
        either = [asyncio.ensure_future(event.wait()) for event in (self.up, self.denied)]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in either:
                waiting.cancel()
        return None if self.up.is_set() else self.denial()

    def denial(self) -> str:
        return f"the Resonate server at {self.url} refused {self.why}"


def printable(url: str) -> str:
    """``url`` as it may be shown in a log: a password in it becomes ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    place = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{place}"))
