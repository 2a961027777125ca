"""resonate-pg's connection: Resonate on Postgres, each process talking to the database.

Requests are stored procedures; pushed messages are rows this process drains,
woken by NOTIFY. No server process stands in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg_pool import AsyncConnectionPool
from resonate.resonate import DEFAULT_MAX_CONCURRENT_TASKS
from resonate_base import ConnectorError
from resonate_pg import PostgresConnection
from resonate_pg.connection import RPC_SQL
from resonate_pg.wire import execute_message, unblock_message

from resonator.connections.link import Refused
from resonator.connections.slots import Slots

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from resonate_pg.client import PgConn

    from resonator.connections.link import Link

log = logging.getLogger("resonator")

# A request, as the connector sends it (``RPC_SQL``), but for a task that is
# taken (``task.acquire``) or told to go on at once (``task.suspend``
# answered 300): its answer also carries the promises the task created that
# have settled, as the protocol's ``preload`` allows (resonate.sql sends
# none). The SDK keeps them, and a replay of the task does not ask for them
# again, one ``task.fence`` each. A settled promise never changes; one still
# pending is left out, so the replay asks for it, and learns whether it has
# settled since. Read in the statement of the request: the same round trip.
PRELOADING = """
WITH asked AS (SELECT %s::text::jsonb AS request),
answered AS (SELECT request, resonate.resonate_rpc(request) AS answer FROM asked)
SELECT CASE
  WHEN (request->>'kind', answer->'head'->>'status') IN (('task.acquire', '200'),
                                                       ('task.suspend', '300'))
  THEN jsonb_set(answer, '{data,preload}', (
    SELECT coalesce(jsonb_agg(resonate._promise_json_raw(child)), '[]')
    FROM resonate.promises AS child
    WHERE child.origin_id = split_part(request->'data'->>'id', ':', 1)
      AND child.parent_id = request->'data'->>'id'
      AND child.id <> child.parent_id AND child.state <> 'pending'))
  ELSE answer END::text
FROM answered
"""

# Every message addressed to this process, in one statement: the work sent to
# its group, the work sent to it alone, and the promises it waits for.
# The last column says which rows are the group's.
DRAIN = (
    "SELECT task_id, version, NULL, true FROM resonate.dequeue_execute(%s, %s) "
    "UNION ALL SELECT task_id, version, NULL, false FROM resonate.dequeue_execute(%s, %s) "
    "UNION ALL SELECT NULL, NULL, promise::text, false FROM resonate.dequeue_unblock(%s, %s)"
)


class OneTrip:
    """Sessions in which each statement is a transaction of its own: one round trip a request.

    The connector's sessions (``resonate_pg.client.PsycopgSessions``) are
    transactions: BEGIN, the statement, COMMIT, three round trips for every
    request. A request is one statement, ``resonate.resonate_rpc(...)``, and
    on a connection in autocommit a statement is a transaction of its own,
    committed by the database before it answers: as atomic, and a third of
    the round trips. It also leaves nothing open between two messages of the
    client: a process cut off mid-request holds no lock past the end of its
    statement. What could still hold one, a statement that never gets to the
    end of its transaction, is ended after ``TRANSACTION_TIMEOUT`` (Postgres
    17 and later).
    """

    TRANSACTION_TIMEOUT = "5s"

    def __init__(self, url: str, size: int = 16) -> None:
        self.url = url
        self.pool = AsyncConnectionPool(
            url,
            kwargs={"autocommit": True, "prepare_threshold": 0},
            configure=self.configure,
            min_size=1,
            max_size=size,  # concurrent requests of this process, as the connector allows
            open=False,
        )
        self.opened: asyncio.Task[None] | None = None

    async def configure(self, connection: psycopg.AsyncConnection[object]) -> None:
        if connection.info.server_version >= 170000:
            await connection.execute(f"SET transaction_timeout = '{self.TRANSACTION_TIMEOUT}'")

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[PgConn]:
        # Opened on first use, in the running loop, once (a second caller waits for the first).
        self.opened = self.opened or asyncio.ensure_future(self.pool.open())
        await asyncio.shield(self.opened)
        async with self.pool.connection() as connection:
            yield cast("PgConn", connection)

    async def dedicated(self) -> PgConn:
        """A connection of its own, for LISTEN."""
        connection = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        return cast("PgConn", connection)

    async def close(self) -> None:
        await self.pool.close()


class Database(PostgresConnection):
    """resonate-pg's connection, telling a ``Link`` how it fares, in fewer round trips.

    Its sessions are ``OneTrip``'s, its requests carry preloads
    (``PRELOADING``), and its drain is one statement (``DRAIN``):
    docs/benchmark.md has what each bought. None of them fixes a defect; they
    make a step cheaper. (resonate-pg's timers need a fix: ``timers.py``.)
    """

    preloading = True  # until the database says this role may not read the promises

    def __init__(
        self, url: str, group: str, pid: str, link: Link, *, slots: Slots | None = None
    ) -> None:
        # The pump drains when NOTIFY says there is something to take, and at
        # least once a second (the connector's default is four times), which
        # is also how soon an outage of the database is noticed.
        super().__init__(sessions=OneTrip(url), pid=pid, group=group, tick=1.0)
        self.link = link
        self.slots = slots or Slots(DEFAULT_MAX_CONCURRENT_TASKS)
        # The last drain left work of the group behind, for want of a free slot.
        self.left_behind = False

    def recv(self, callback: Callable[[str], None]) -> None:
        super().recv(self.slots.gate(callback))  # one copy of a task's execute waits here

    def slot_freed(self) -> None:
        """A task ended here: if the group's work was left behind, drain again now."""
        if self.left_behind:
            self._wake.set()

    async def send(self, req: str, headers: dict[str, str] | None = None) -> str:
        """A request, in one statement: ``PRELOADING``, or the connector's own where it may not."""
        if self._stopped:
            raise ConnectorError(RuntimeError("connection has been stopped"))
        key = self.slots.acquiring(req)
        try:
            if self.preloading:
                try:
                    return await self.request(PRELOADING, req)
                except psycopg.errors.InsufficientPrivilege:
                    self.refused()
            return await self.request(RPC_SQL, req)
        except ConnectorError:
            raise
        except Exception as error:  # as the connector: whatever failed, the request did
            raise ConnectorError(error) from error
        finally:
            if key is not None:
                self.slots.acquired(key)

    def refused(self) -> None:
        # The statement failed whole, so nothing was done: it is asked again without the read.
        log.info("this role may not read resonate.promises: no preloads")
        self.preloading = False

    async def request(self, statement: str, req: str) -> str:
        rows = await self.rows(statement, (req,))
        if not rows or rows[0][0] is None:
            raise ConnectorError(RuntimeError("resonate.resonate_rpc returned no row"))
        return str(rows[0][0])

    async def rows(self, statement: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        async with self._sessions.session() as connection:
            cursor = await connection.execute(statement, params)
            return cast("list[tuple[Any, ...]]", await cursor.fetchall())

    async def _drain(self) -> None:
        # The pump drains at least once a second: a heartbeat of the database. A
        # drain may also hang, waiting for the pool to reconnect, so one that
        # takes over two seconds counts as an outage too.
        hanging = asyncio.get_running_loop().call_later(
            2.0, self.link.lost, ConnectionError("the database does not answer")
        )
        try:
            await self._fire_timers()
            await self.take()
        except Exception as error:
            self.link.lost(ConnectionError(error))
            raise
        finally:
            hanging.cancel()
        self.link.connected()

    async def take(self) -> None:
        """Claim the messages addressed to this process, in one statement, and hand them on.

        The connector's drain makes three statements in one transaction, five
        round trips; here one. Delivered once the statement (and its
        transaction) is over, as the connector does, and again at once if a
        kind of message filled its page.

        Of the work sent to the group, it takes only as much as it has slots
        free: the rest is left to the other members, which may be idle, and
        to this one once a task of its own ends. (Work sent to this process
        alone, and results, are all taken: nobody else would take them.)
        """
        group, alone, limit = self._anycast, self._unicast, self._limit
        free = min(limit, self.slots.free())
        rows = await self.rows(DRAIN, (group, free, alone, limit, alone, limit))
        for task, version, promise, _ in rows:
            self._deliver(unblock_message(promise) if promise else execute_message(task, version))
        # The group's work filled the free slots: there may be more of it.
        self.left_behind = free < limit and sum(row[3] for row in rows) >= free
        if len(rows) >= limit:
            self._wake.set()

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
