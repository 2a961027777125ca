"""Whether the server can reach this process, said once per change."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from resonate.retry import ExponentialBackoff

log = logging.getLogger("resonator")

# The SDK reconnects by itself; a short ladder makes a restarted server
# noticed within seconds instead of a minute.
BACKOFF = ExponentialBackoff(initial=0.25, max_delay=2.0)


class Refused(ConnectionError):
    """The server is there, but turned this process away; the message says why."""


class Link:
    """The channel on which work and results reach this process, and how it fares.

    It says "connected to ..." when the channel first works and each time it
    works again, and "cannot reach ..." once per outage. ``silent``: say
    nothing until the first connection (a batch run says itself, once, that
    it gave up waiting).
    """

    def __init__(self, url: str, silent: bool = False) -> None:
        self.url = url
        self.up = asyncio.Event()  # set while the channel works
        self.down = asyncio.Event()  # set while it does not, once it was tried
        self.silent = silent
        self.lost_reported = False
        self.ever_up = False
        self.why = ""  # why the server turned the last attempt away, if it did

    def connected(self) -> None:
        if self.up.is_set():
            return
        self.up.set()
        self.down.clear()
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
        log.debug("connection to %s failed: %r", self.url, why)
        if self.lost_reported or self.silent:
            return
        self.lost_reported = True
        if isinstance(why, Refused):
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
