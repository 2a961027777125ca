"""The defects Resonator works around, each shown on upstream's own code, unpatched.

Each test is a strict xfail: it asserts what upstream should do, and fails
because upstream does not. The day one passes, upstream is fixed, the suite
fails on the XPASS, and the workaround it names can go. docs/workarounds.md
lists them all, with the versions and the workaround of each; the twin of
each test, with Resonator's workaround in place, passes elsewhere in the
suite. (One defect has no test here, and the page says why.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import aiohttp.client
import psycopg
import pytest
from resonate.connections import HttpConnection, LocalConnection, SSEConnection
from resonate.connections.local import ServerState, unwrap_request_envelope
from resonate.error import ApplicationError
from resonate.heartbeat import AsyncHeartbeat
from resonate.resonate import Resonate
from resonate.retry import ExponentialBackoff
from resonate.send import Sender
from resonate.timing import now_ms
from resonate.transport import Transport
from resonate.types import PromiseCreateReq
from resonate_pg import PostgresConnection

from resonator.connections import shut_down
from resonator.connections.link import Link
from resonator.connections.timers import KeepSweeping
from resonator.harness.processes import WAIT, Topology
from tests.helpers import available, envelope
from tests.test_devserver import devserver
from tests.test_servers import post

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from resonate.context import Context

    from resonator.parser import Expr

SECOND = aiohttp.ClientTimeout(total=1, sock_connect=1)


def task_state(url: str, id: str) -> str:
    """What the server says of the task of promise ``id``: acquired, pending..."""
    state: str = post(url, "task.get", id=id)["data"]["task"]["state"]
    return state


# ── resonate-sdk 0.8.1 ──────────────────────────────────────────────────────


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="resonate-sdk 0.8.1: its SSE listener ends for good on a session timeout",
)
def test_the_sdks_listener_outlives_its_session_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """``connections/sse.py`` (KeepListening) works around this."""
    monkeypatch.setattr(aiohttp.client, "DEFAULT_TIMEOUT", SECOND)

    async def scenario() -> BaseException | None:
        async with devserver() as client:
            source = SSEConnection(str(client.server.make_url("")), pid="lhs", group="exp")
            await source.start()
            listener = source._sse_handle
            assert listener is not None
            await asyncio.wait({listener}, timeout=10)  # ten timeouts' worth
            ended = listener.exception() if listener.done() else None
            with contextlib.suppress(TimeoutError):  # stop() raises what ended the loop
                await source.stop()
            # ...before it closes the session, so close it here: left to the
            # garbage collector, its "Unclosed client session" lands in the
            # log of whichever test runs then.
            if source._session is not None:
                await source._session.close()
            return ended

    assert asyncio.run(scenario()) is None, "the listener ended"


async def noop(ctx: Context, x: int) -> int:
    return x


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="resonate-sdk 0.8.1: its periodic check takes a promise being created for a lost one",
)
def test_the_sdks_periodic_check_leaves_a_promise_being_created_alone() -> None:
    """``Connection.refresh_secs = 0`` (connections/__init__.py) works around this."""

    async def failures(refresh: float) -> int:
        resonate = Resonate(
            network=LocalConnection(), subscription_refresh_secs=refresh, autostart=False
        )
        resonate.register(noop, name="noop")
        resonate.start()
        failed = 0
        for i in range(500):
            try:
                await resonate.run(f"r{i}", "noop", i).result()
            except ApplicationError:
                failed += 1
        await resonate.stop()
        return failed

    assert asyncio.run(failures(0)) == 0  # without the check, as Resonator runs
    assert asyncio.run(failures(0.001)) == 0


@contextlib.asynccontextmanager
async def holding(
    url: str, pid: str, ids: list[str], lease_ms: int
) -> AsyncIterator[tuple[Sender, list[int]]]:
    """Tasks of ``ids`` created on the server at ``url``, held by ``pid``; their versions."""
    network = HttpConnection(url)
    sender = Sender(Transport(network), None)
    try:
        versions = []
        for id in ids:
            tags = {"resonate:target": "poll://any@upstream", "resonate:origin": id}
            req = PromiseCreateReq(id=id, timeout_at=now_ms() + 60_000, tags=tags)
            versions.append((await sender.task_create(pid, lease_ms, req)).task.version)
        yield sender, versions
    finally:
        await network.stop()


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="resonate-sdk 0.8.1: one heartbeat for all tasks, refused across computations",
)
def test_the_sdks_heartbeat_keeps_the_leases_of_two_computations() -> None:
    """``connections/heartbeat.py`` (HeartbeatPerOrigin) works around this.

    A worker that holds tasks of two computations renews them in one
    ``task.heartbeat``, which the protocol refuses (400 All tasks must belong
    to the same origin): neither lease is renewed, and both lapse.
    """
    with Topology(available("resonate")) as topology:
        topology.server()

        async def scenario() -> None:
            ids = [f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"]
            async with holding(topology.url, "p", ids, lease_ms=1000) as (sender, versions):
                heartbeat = AsyncHeartbeat("p", 250, sender)
                for id, version in zip(ids, versions, strict=True):
                    heartbeat.start(id, version)
                await asyncio.sleep(2.5)  # two and a half leases: only beats can keep them
                heartbeat.shutdown()
            assert [task_state(topology.url, id) for id in ids] == ["acquired", "acquired"]

        asyncio.run(scenario())


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="resonate-sdk 0.8.1: its heartbeat knows a task by its id alone",
)
def test_the_sdks_heartbeat_keeps_a_task_taken_again_when_its_last_run_ends() -> None:
    """``connections/heartbeat.py`` (HeartbeatPerOrigin) works around this.

    A run lost its lease and the server handed the task out again, to the
    same process: the new run renews it at its new version. When the old run
    ends, it stops the heartbeat of the task, the new run's included.
    """
    with Topology(available("resonate")) as topology:
        topology.server()

        async def scenario() -> None:
            id = f"t-{uuid.uuid4().hex[:6]}"
            async with holding(topology.url, "p", [id], lease_ms=1000) as (sender, [old]):
                heartbeat = AsyncHeartbeat("p", 250, sender)
                heartbeat.start(id, old)  # the first run
                await sender.task_release(id, old)  # its lease lost: the task is pending again
                new = (await sender.task_acquire(id, old, "p", 1000)).task.version
                heartbeat.start(id, new)  # the second run, on the same process
                heartbeat.stop(id)  # the first run ends
                await asyncio.sleep(2.5)  # two and a half leases of the second run
                heartbeat.shutdown()
            assert task_state(topology.url, id) == "acquired"

        asyncio.run(scenario())


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="resonate-sdk 0.8.1: its reconnection ladder waits up to 60 s",
)
def test_the_sdks_reconnection_notices_a_server_back_within_seconds() -> None:
    """``BACKOFF`` (connections/link.py) works around this.

    The SDK's HTTP connection and SSE listener share a ladder that doubles
    from one second up to a minute: a server that comes back after an outage
    of a minute is heard from up to a minute later, and a prompt waits as long.
    """
    ladder = ExponentialBackoff()  # what HttpConnection and SSEConnection take by default
    assert max(ladder.delay(attempt) for attempt in range(20)) <= 2.0


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="resonate-sdk 0.8.1: stop() waits for the work in hand",
)
def test_the_sdks_stop_does_not_wait_for_an_operator_taking_its_time() -> None:
    """``shut_down`` (connections/__init__.py) works around this.

    A worker told to stop has nobody left to answer to: its lease will lapse
    and another worker will take the task. The SDK's ``stop`` waits for the
    work in hand however long it takes, so Ctrl-C or SIGTERM does not stop
    a worker in the middle of a slow operator.
    """
    began = asyncio.Event()

    async def slow(ctx: Context, x: int) -> int:
        began.set()
        await asyncio.sleep(60)
        return x

    async def scenario() -> bool:
        resonate = Resonate(network=LocalConnection(), autostart=False)
        resonate.register(slow, name="slow")
        resonate.start()
        resonate.run("slow", "slow", 1)
        await began.wait()
        stopping = asyncio.ensure_future(resonate.stop())
        try:
            return bool((await asyncio.wait({stopping}, timeout=3))[0])
        finally:
            await shut_down(resonate)

    assert asyncio.run(scenario()), "stop() still waited after 3 s"


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="resonate-sdk 0.8.1: an argument of a recursive type cannot be converted",
)
def test_the_sdk_calls_a_function_whose_argument_has_a_recursive_type() -> None:
    """``Expr`` known to the type checker only (resonator.py) works around this.

    The SDK converts each argument to its annotation with msgspec, which
    cannot analyse a recursive type: the call raises ``RecursionError``, the
    SDK retries it, and the computation never ends.
    """
    from resonator import parser

    async def evaluate(ctx: Context, expr: Expr) -> int:
        return 0

    # The annotation resolved at run time, as it would be without the
    # TYPE_CHECKING guard of resonator.py.
    evaluate.__annotations__["expr"] = parser.Expr
    logging.getLogger("resonate").setLevel(logging.CRITICAL)  # each retry logs a traceback

    async def scenario() -> bool:
        resonate = Resonate(network=LocalConnection(), autostart=False)
        resonate.register(evaluate, name="=")
        resonate.start()
        try:
            handle = resonate.run("recursive", "=", parser.parse("(1 + 2) * 3"))
            result = asyncio.ensure_future(handle.result())
            return bool((await asyncio.wait({result}, timeout=5))[0])
        finally:
            await shut_down(resonate)

    assert asyncio.run(scenario()), "no value after 5 s"


# ── The SDK's model of the server (resonate-sdk 0.8.1) ──────────────────────


class Counted(dict[str, Any]):
    """A dict that counts the values handed out by ``values()``."""

    handed = 0

    def values(self) -> Any:
        for value in super().values():
            self.handed += 1
            yield value


def create(state: ServerState, id: str, branch: str) -> dict[str, Any]:
    tags = {"resonate:branch": branch, "resonate:origin": branch}
    data = {"id": id, "timeoutAt": now_ms() + 60_000, "param": None, "tags": tags}
    request = {"kind": "promise.create", "corrId": id, **data}
    answer: dict[str, Any] = state.apply(now_ms(), request)
    return answer


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="resonate-sdk 0.8.1: its model reads every promise to preload a branch",
)
def test_the_sdks_model_preloads_a_branch_without_reading_every_promise() -> None:
    """``IndexedServerState`` (servers/model.py) works around this (and likewise for a settle).

    Each task the model hands out carries the other promises of its branch,
    found by a walk over every promise held: a step cost more the more
    promises there were.
    """
    state = ServerState()
    state.promises = Counted()
    for i in range(1000):
        create(state, f"other{i}", f"other{i}")
    create(state, "mine", "mine")
    create(state, "mine:1", "mine")
    state.promises.handed = 0
    assert [record["id"] for record in state.preload("mine")] == ["mine:1"]
    assert state.promises.handed <= 2


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="resonate-sdk 0.8.1: its model answers in words of its own",
)
def test_the_sdks_model_answers_a_create_as_the_real_server_does() -> None:
    """``servers/wire.py`` works around this: the stand-in answers in the real server's words.

    The real server answers a create with 200 and a promise whose missing
    ``param`` is ``{}``; the model with 201 and null. The Python SDK takes
    either, the TypeScript SDK only the server's.
    """
    answer = create(ServerState(), "p", "p")
    assert (answer["status"], answer["promise"]["param"]) == (200, {})


def acquired(state: ServerState, id: str) -> None:
    """A task of promise ``id`` created and held by ``p``, in the model."""
    action = envelope("promise.create", id=id, timeoutAt=now_ms() + 60_000, tags=tags(id))
    request = unwrap_request_envelope(envelope("task.create", pid="p", ttl=60_000, action=action))
    assert state.apply(now_ms(), request)["status"] < 300


def tags(id: str) -> dict[str, str]:
    return {"resonate:target": "poll://any@upstream", "resonate:origin": id}


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="resonate-sdk 0.8.1: its model takes a release at any version",
)
def test_the_sdks_model_refuses_a_release_at_a_version_not_the_tasks() -> None:
    """``IndexedServerState.stale`` (servers/model.py) works around this.

    A run that lost its lease released the task from under the run that had
    taken it since; that run's next step then failed and released it in
    turn, and the two went round for as long as both lived. The real server
    and resonate.sql refuse it (409).
    """
    state = ServerState()
    acquired(state, "t")
    request = unwrap_request_envelope(envelope("task.release", id="t", version=7))
    assert state.apply(now_ms(), request)["status"] == 409


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="resonate-sdk 0.8.1: its model renews tasks of two origins at once",
)
def test_the_sdks_model_refuses_a_heartbeat_across_origins() -> None:
    """``IndexedServerState.apply`` (servers/model.py) works around this.

    The protocol, and the real server, refuse a heartbeat whose tasks belong
    to more than one computation (400). The model renews them: what works on
    it, the SDK's own heartbeat among it, fails on the real server.
    """
    state = ServerState()
    acquired(state, "a")
    acquired(state, "b")
    refs = [{"id": "a", "version": 0}, {"id": "b", "version": 0}]
    request = unwrap_request_envelope(envelope("task.heartbeat", pid="p", tasks=refs))
    assert state.apply(now_ms(), request)["status"] == 400


# ── resonate-pg 0.8.0 ───────────────────────────────────────────────────────


def stored_state(url: str, id: str) -> str:
    """Promise ``id``'s state as its row has it: what a sweep wrote, not computed on reading."""
    with psycopg.connect(url) as database:
        row = database.execute(
            "SELECT state FROM resonate.promises WHERE id = %s", (id,)
        ).fetchone()
    assert row is not None
    return str(row[0])


def upstream(url: str) -> PostgresConnection:
    return PostgresConnection(url, group="upstream", pid="p")


def ours(url: str) -> PostgresConnection:
    return KeepSweeping(url, "upstream", "p", Link(url))


@pytest.mark.parametrize(
    "connection",
    [
        pytest.param(
            upstream,
            marks=pytest.mark.xfail(
                strict=True,
                raises=AssertionError,
                reason="resonate-pg 0.8.0: its timer sweep stops for good after one error",
            ),
        ),
        ours,
    ],
)
def test_timers_fire_after_an_error(connection: Callable[[str], PostgresConnection]) -> None:
    """``connections/timers.py`` (KeepSweeping) works around resonate-pg's defect.

    The connection runs ``resonate.process_timeouts()`` before each drain,
    and turns it off for good after its first error of any kind: here, its
    sessions cut by the database (as a restart of the database cuts them).
    From then on no durable sleep ends, no promise times out and no lease lapses.
    """
    with Topology(available("postgres")) as topology:
        topology.server()

        async def scenario() -> str:
            source = connection(topology.url)
            source.recv(lambda message: None)  # a source: its pump drains, and sweeps
            await source.start()
            try:
                async with await psycopg.AsyncConnection.connect(
                    topology.url, autocommit=True
                ) as admin:
                    await admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
                    )
                    # A durable sleep of half a second, made by another session
                    # (the source's own may be the ones cut).
                    id = f"sleep-{uuid.uuid4().hex[:6]}"
                    tags = {"resonate:timer": "true"}
                    due = envelope("promise.create", id=id, timeoutAt=now_ms() + 500, tags=tags)
                    await admin.execute(
                        "SELECT resonate.resonate_rpc(%s::jsonb)", (json.dumps(due),)
                    )
                deadline = time.monotonic() + 10  # ten sweeps' worth, and more
                while (state := stored_state(topology.url, id)) == "pending":
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.25)
                return state
            finally:
                await source.stop()

        assert asyncio.run(scenario()) == "resolved"  # the sleep is over


def rpc(database: psycopg.Connection[Any], kind: str, **data: Any) -> dict[str, Any]:
    """One request of the protocol, as resonate.sql answers it (its status, in ``head``)."""
    request = json.dumps(envelope(kind, **data))
    row = database.execute("SELECT resonate.resonate_rpc(%s::jsonb)::text", (request,)).fetchone()
    assert row is not None
    answer: dict[str, Any] = json.loads(row[0])
    return answer


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="resonate-pg 0.8.0: a settle and a suspend take their locks in two orders",
)
def test_resonate_sql_settles_a_child_beside_its_parents_suspend_without_a_deadlock() -> None:
    """``deadlock_timeout=20ms`` (servers/postgres.py) works around this.

    A settle of ``P:2`` locks ``P:2``, then ``P``, which awaits it; a suspend
    of ``P`` locks them in id order, ``P`` first. Interleaved, each waits for
    the other: Postgres breaks the deadlock after ``deadlock_timeout`` (a
    second by default), and ``resonate_rpc`` tries again. Here a row lock on
    ``P:2``, taken by a third session, holds the settle between its two locks
    while the suspend takes its first, so the two meet every time.
    """
    with Topology(available("postgres")) as topology:
        topology.server()
        url = topology.url
        with psycopg.connect(url, autocommit=True) as database:
            target = {"resonate:target": "poll://any@upstream", "resonate:origin": "P"}
            action = envelope("promise.create", id="P", timeoutAt=2**53, tags=target)
            assert (
                rpc(database, "task.create", pid="p", ttl=60_000, action=action)["head"]["status"]
                == 200
            )
            for child in ("P:1", "P:2"):
                tags = {"resonate:external": "true", "resonate:origin": "P"}
                rpc(database, "promise.create", id=child, timeoutAt=2**53, tags=tags)

            def awaiting(*children: str) -> list[dict[str, Any]]:
                return [
                    envelope("promise.register_callback", awaited=child, awaiter="P")
                    for child in children
                ]

            # P awaits both; P:1 settles; P runs again, at version 2.
            rpc(database, "task.suspend", id="P", version=1, actions=awaiting("P:1", "P:2"))
            rpc(database, "promise.settle", id="P:1", state="resolved", value={})
            assert (
                rpc(database, "task.acquire", id="P", version=1, pid="p", ttl=60_000)["head"][
                    "status"
                ]
                == 200
            )

            def deadlocks() -> int:
                query = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
                row = database.execute(query).fetchone()
                assert row is not None
                return int(row[0])

            def waiting(name: str) -> bool:
                query = "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = %s"
                row = database.execute(query, (name,)).fetchone()
                return row is not None and row[0] == "Lock"

            def request(name: str, kind: str, **data: Any) -> None:
                with psycopg.connect(url, autocommit=True, application_name=name) as session:
                    rpc(session, kind, **data)

            before = deadlocks()
            with psycopg.connect(url) as holder:
                holder.execute("SELECT 1 FROM resonate.promises WHERE id = 'P:2' FOR UPDATE")
                settle = threading.Thread(
                    target=request,
                    args=("settle", "promise.settle"),
                    kwargs={"id": "P:2", "state": "resolved", "value": {}},
                )
                settle.start()
                until(lambda: waiting("settle"))  # it holds P:2, and waits for the row
                suspend = threading.Thread(
                    target=request,
                    args=("suspend", "task.suspend"),
                    kwargs={"id": "P", "version": 2, "actions": awaiting("P:2")},
                )
                suspend.start()
                until(lambda: waiting("suspend"))  # it holds P, and waits for P:2
                holder.commit()  # the settle goes on, to P
            settle.join(WAIT)
            suspend.join(WAIT)
            # A backend's counts reach pg_stat_database when it reports them:
            # a deadlock shows within a second or so of the two ending.
            with contextlib.suppress(TimeoutError):
                until(lambda: deadlocks() > before, timeout=5)
            assert deadlocks() == before


def until(holds: Callable[[], bool], timeout: float = WAIT) -> None:
    """Once ``holds()`` is true (asked every 10 ms); ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not holds():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.01)


# ── resonate 0.9.8 ──────────────────────────────────────────────────────────


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="resonate 0.9.8: refuses the child ids of resonate-sdk 0.8",
)
def test_resonate_0_9_8_takes_the_child_ids_of_sdk_0_8() -> None:
    """``connections/ids.py`` works around this: every process asks, and says so.

    resonate-sdk 0.8 names the first call made by promise ``r`` ``r:1``, as
    the 0.10 server's rule has it; 0.9.8 wants ``r.1`` and answers ``400
    Promise ID must be prefixed by resonate:origin``.
    """
    with Topology(available("resonate-0.9.8")) as topology:
        topology.server()
        answer = post(
            topology.url,
            "promise.create",
            id="r:1",
            timeoutAt=now_ms() + 60_000,
            param={},
            tags={"resonate:origin": "r"},
        )
        assert answer["head"]["status"] == 200, answer
