"""A Resonator process with a probe at the SDK's seams, and with cuts taken back: for breakdown.py.

    python -m bench.probe       # as ``python -m resonator``, with GRP and PID set

Every request the process sends (``Transport.send``) and every message it is
handed (``Transport.recv``) is written, timed, to the file that
``$RESONATOR_PROBE`` names, one JSON object a line, at once (the workers of
a topology are killed, not stopped); on Postgres also every session it takes
from its ``PgSessions``, with its statements and its commit, and every
NOTIFY it hears. ``$RESONATOR_VARIANT`` names what of Resonator's Postgres
connection it takes back first (``variant``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from resonate.transport import Transport

    from resonator.connections.database import Database

PROBE = "RESONATOR_PROBE"  # the file a probed process writes its events to
VARIANT = "RESONATOR_VARIANT"  # what a probed process takes back (see variant())


class Events:
    """One process's events, a JSON object a line, written at once (the workers are killed)."""

    def __init__(self, path: str, name: str) -> None:
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 (open while the process lives)
        self.name = name

    def __call__(self, **event: Any) -> None:
        self.file.write(json.dumps({"p": self.name, **event}) + "\n")


class Probe:
    """Where this process's events go; installed once, into the SDK's transport and our sessions."""

    events: Events | None = None

    @classmethod
    def install(cls, events: Events) -> None:
        first = cls.events is None
        cls.events = events
        if first:
            cls.patch()

    @classmethod
    def say(cls, **event: Any) -> None:
        if cls.events is not None:
            cls.events(**event)

    @classmethod
    def patch(cls) -> None:
        from resonate.transport import Transport

        from resonator.connections.database import Database

        send, recv, init = Transport.send, Transport.recv, Database.__init__

        async def timed_send(
            self: Transport, kind: str, corr_id: str, body: str, headers: Any = None
        ) -> Any:
            t0 = time.monotonic()
            try:
                return await send(self, kind, corr_id, body, headers)
            finally:
                cls.say(e="req", kind=kind, t0=t0, t1=time.monotonic(), **subjects(body))

        def timed_recv(self: Transport, callback: Callable[[Any], None]) -> None:
            def on_message(message: Any) -> None:
                task = getattr(message, "task_id", None)
                if task is None:
                    cls.say(e="msg", t=time.monotonic(), promise=message.promise.id)
                else:
                    cls.say(e="msg", t=time.monotonic(), task=task, v=message.version)
                callback(message)

            recv(self, on_message)

        def timed_init(self: Database, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            self._sessions = TimedSessions(self._sessions)

        Transport.send = timed_send  # type: ignore[method-assign]
        Transport.recv = timed_recv  # type: ignore[method-assign]
        Database.__init__ = timed_init  # type: ignore[method-assign]


def subjects(body: str) -> dict[str, Any]:
    """The ids a request acts on: its task (or awaited promise), and the promise it names."""
    data = json.loads(body)["data"]
    action = data.get("action") or {}
    return {
        "id": data.get("id") or data.get("awaited"),
        "sub": action.get("kind"),
        "child": (action.get("data") or {}).get("id"),
    }


class TimedSessions:
    """A ``PgSessions`` that says what each session did and took, and each NOTIFY heard."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        t0 = time.monotonic()
        async with self.inner.session() as connection:
            timed = TimedConnection(connection)
            yield timed
            closing = time.monotonic()
        # In autocommit the statement commits; else the COMMIT sent at ``closing`` does.
        autocommit = bool(getattr(connection, "autocommit", False))
        commit = timed.sql[-1][1] if autocommit and timed.sql else closing
        name = timed.sql[0][0] if timed.sql else "?"
        Probe.say(
            e="session",
            name=name,
            statements=len(timed.sql),
            t0=t0,
            commit=commit,
            closing=closing,
            t1=time.monotonic(),
        )

    async def dedicated(self) -> Any:
        return TimedConnection(await self.inner.dedicated())

    async def close(self) -> None:
        await self.inner.close()


class TimedConnection:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sql: list[tuple[str, float]] = []  # (what the statement calls, when it was sent)

    async def execute(self, query: str, params: Sequence[Any] | None = None) -> Any:
        called = next((f for f in ("dequeue_", "process_timeouts") if f in query), "request")
        self.sql.append((called.rstrip("_"), time.monotonic()))
        return await self.inner.execute(query, params)

    async def notifies(self) -> AsyncIterator[Any]:
        async for notification in self.inner.notifies():
            Probe.say(e="notify", t=time.monotonic())
            yield notification

    async def close(self) -> None:
        await self.inner.close()


def variant(spec: str) -> None:
    """Take back in this process what ``spec`` names of what our Postgres connection does.

    ``no-onetrip``: the connector's sessions (BEGIN, statement, COMMIT);
    ``no-drain``: the connector's drain (three statements in a transaction);
    ``no-preload``: requests as the connector sends them;
    ``before``: all of these.
    ``prepare-N`` or ``prepare-never``: psycopg prepares a statement after its
    N-th run on a connection (5 by default; OneTrip prepares at once).
    And on any server, ``sdk-heartbeat``: the SDK's own heartbeat, whose first
    beat comes as a task starts, and then every half lease
    (``connections/heartbeat.py``'s waits a quarter lease).
    """
    from resonate.heartbeat import AsyncHeartbeat
    from resonate_pg.client import PsycopgSessions

    from resonator import connections
    from resonator.connections import database

    ORIGINAL.setdefault("OneTrip", database.OneTrip)
    ORIGINAL.setdefault("take", database.Database.take)
    ORIGINAL.setdefault("heartbeat", connections.HeartbeatPerOrigin)  # type: ignore[attr-defined]
    database.OneTrip = ORIGINAL["OneTrip"]  # type: ignore[misc]
    database.Database.take = ORIGINAL["take"]  # type: ignore[method-assign]
    database.Database.preloading = True
    connections.HeartbeatPerOrigin = ORIGINAL["heartbeat"]  # type: ignore[attr-defined]
    names = set(spec.split("+"))
    if "sdk-heartbeat" in names:

        def heartbeat(pid: str, lease_ms: int, sender: Any) -> Any:
            return AsyncHeartbeat(pid, lease_ms // 2, sender)

        connections.HeartbeatPerOrigin = heartbeat  # type: ignore[attr-defined,assignment]
    if "before" in names:
        names |= {"no-onetrip", "no-drain", "no-preload"}
    if "no-onetrip" in names:
        database.OneTrip = PsycopgSessions  # type: ignore[misc,assignment]
    if "no-drain" in names:

        async def take(self: Database) -> None:
            messages: list[str] = []
            async with self._sessions.session() as connection:
                messages += await self._dequeue_executes(connection, self._anycast)
                messages += await self._dequeue_executes(connection, self._unicast)
                messages += await self._dequeue_unblocks(connection, self._unicast)
            for message in messages:
                self._deliver(message)

        database.Database.take = take  # type: ignore[method-assign]
    if "no-preload" in names:
        database.Database.preloading = False
    for name in names:
        if name.startswith("prepare-"):
            threshold = None if name == "prepare-never" else int(name.removeprefix("prepare-"))

            def sessions(url: str, threshold: int | None = threshold) -> database.OneTrip:
                made: database.OneTrip = ORIGINAL["OneTrip"](url)
                made.pool.kwargs = {"autocommit": True, "prepare_threshold": threshold}
                return made

            database.OneTrip = sessions  # type: ignore[misc,assignment]


ORIGINAL: dict[str, Any] = {}  # what variant() changes, as it was


def worker() -> None:
    """``python -m resonator`` as a worker, probed, with ``$RESONATOR_VARIANT`` taken back."""
    variant(os.environ.get(VARIANT, ""))
    if PROBE in os.environ:
        Probe.install(Events(os.environ[PROBE], f"{os.environ['GRP']}/{os.environ['PID']}"))
    from resonator.resonator import main

    sys.argv = sys.argv[:1]
    sys.exit(main())


if __name__ == "__main__":
    worker()
