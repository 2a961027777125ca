"""resonate-pg's connection: Resonate on Postgres, each process talking to the database.

Requests are stored procedures; pushed messages are rows this process drains,
woken by NOTIFY. No server process stands in between.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import psycopg
from resonate_pg import PostgresConnection

from resonator.connections.link import Refused

if TYPE_CHECKING:
    from resonator.connections.link import Link

log = logging.getLogger("resonator")


class KeepSweeping(PostgresConnection):
    """resonate-pg's connection, telling a ``Link`` how it fares, with timers that keep firing.

    Works around a defect of resonate-pg 0.8.0 (``PostgresConnection._fire_timers``
    in ``resonate_pg/connection.py``): it runs ``resonate.process_timeouts()``
    before every drain, and turns itself off for good after its first error of
    any kind, a database restart included. From then on no lease lapses, and
    the work of a worker that died is never handed to another. Here the sweep
    runs at most every ``SWEEP_SECONDS`` (it scans every promise, so running
    it on every wake cost more as promises piled up), and only a refusal for
    want of privilege stops it (pg_cron is then the timer driver). Delete
    ``_fire_timers`` below once the connector keeps its timers going.
    """

    SWEEP_SECONDS = 1.0

    def __init__(self, url: str, group: str, pid: str, link: Link) -> None:
        # The pump drains when NOTIFY says there is something to take, and at
        # least once a second (the connector's default is four times), which
        # is also how soon an outage of the database is noticed.
        super().__init__(url, pid=pid, group=group, tick=1.0)
        self.link = link
        self.next_sweep = 0.0

    async def _drain(self) -> None:
        # The pump drains at least once a second: a heartbeat of the database. A
        # drain may also hang, waiting for the pool to reconnect, so one that
        # takes over two seconds counts as an outage too.
        hanging = asyncio.get_running_loop().call_later(
            2.0, self.link.lost, ConnectionError("the database does not answer")
        )
        try:
            await super()._drain()
        except Exception as error:
            self.link.lost(ConnectionError(error))
            raise
        finally:
            hanging.cancel()
        self.link.connected()

    async def _listen_once(self) -> None:
        # Its own connection, opened at once: the first to hear why the
        # database turns this process away (no such database, a wrong password).
        try:
            await super()._listen_once()
        except psycopg.OperationalError as error:
            # The server's refusal, or libpq's when the server asks for a
            # password that the URL does not have.
            said = str(error)
            why = (said.partition("FATAL:")[2] or said.partition("fe_sendauth:")[2]).strip()
            self.link.lost(Refused(why) if why else ConnectionError(error))
            raise

    async def _fire_timers(self) -> None:
        now = asyncio.get_running_loop().time()
        if not self._drive_timers or now < self.next_sweep:
            return
        self.next_sweep = now + self.SWEEP_SECONDS
        try:
            async with self._sessions.session() as connection:
                await connection.execute("SELECT resonate.process_timeouts()")
        except psycopg.errors.InsufficientPrivilege:
            log.warning("this role may not call resonate.process_timeouts(): timers are pg_cron's")
            self._drive_timers = False
        except Exception as error:  # the drain that follows reports the database's state
            log.debug("timer sweep failed: %r", error)
