"""resonate-pg's timers, kept firing: a workaround for a defect of resonate-pg 0.8.0.

What upstream does wrong: ``PostgresConnection._fire_timers`` (in
``resonate_pg/connection.py``) runs ``resonate.process_timeouts()`` before
every drain, and turns itself off for good after its first error of any
kind, a database restart included. From then on no lease lapses and no
promise times out: the work of a worker that died is never handed to
another.

Here the sweep runs at most every ``SWEEP_SECONDS`` (on a database without
the index that resonator-postgres makes, it reads every promise), and only a
refusal for want of privilege stops it (pg_cron is then the timer driver).

Shown on resonate-pg's own connection, unpatched, by
``tests/test_upstream.py::test_timers_fire_after_an_error[upstream]``, a
strict xfail (``[ours]`` beside it passes). Delete this module the day it
passes, and give ``Connection`` a ``Database`` instead of a ``KeepSweeping``.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg

from resonator.connections.database import Database

log = logging.getLogger("resonator")


class KeepSweeping(Database):
    """A ``Database`` whose timer sweep survives an error, and runs once a second at most."""

    SWEEP_SECONDS = 1.0
    next_sweep = 0.0

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
