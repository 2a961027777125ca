"""What makes Resonator's Postgres connection quick, checked against a real resonator-postgres.

Each request is one statement in a transaction of its own, committed before
it is answered, with every step on disk; the drain takes every message in one
statement, and pages on; a task that is taken learns the promises it created
before, unless its role may not read them; the timer sweep reads only the
promises that are due; requests keep their index plans however many promises
are kept, and the pool reuses the connection returned last. These run when
``RESONATE_PG_SQL`` names resonate.sql.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import pq

from resonator.connections.database import OneTrip
from resonator.connections.link import Link
from resonator.connections.timers import KeepSweeping
from resonator.harness.processes import Topology
from resonator.servers.postgres import ROOTS, SETTLED_ROOTS, TIMED, TUNING
from tests.helpers import ARTICLE, available

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def server() -> Iterator[Topology]:
    """resonator-postgres alone."""
    with Topology(available("postgres")) as topology:
        topology.server()
        yield topology


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as database:
        cursor = database.execute(sql.encode())
        return cursor.fetchall() if cursor.description else []


def test_every_step_is_on_disk_when_it_is_acknowledged(server: Topology) -> None:
    settings = "SELECT name, setting FROM pg_settings WHERE name IN "
    settings += "('fsync', 'synchronous_commit', 'full_page_writes')"
    assert dict(query(server.url, settings)) == {
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
    }

    async def request() -> tuple[pq.TransactionStatus, str]:
        sessions = OneTrip(server.url)
        try:
            async with sessions.session() as connection:
                await connection.execute("SELECT resonate.get_schema_version()")
                raw = connection.pgconn  # type: ignore[attr-defined]
                status = raw.transaction_status
                shown = await (await connection.execute("SHOW transaction_timeout")).fetchone()
        finally:
            await sessions.close()
        return status, shown[0]

    # Committed as it was answered: no transaction is left open on the session,
    # and one that never ends is ended after five seconds.
    assert asyncio.run(request()) == (pq.TransactionStatus.IDLE, "5s")


def test_the_timer_sweep_reads_only_the_promises_that_are_due(server: Topology) -> None:
    assert TIMED.startswith("CREATE INDEX IF NOT EXISTS resonator_promises_due ")
    # The query of resonate.sql's process_promise_timeouts, as it is there.
    sweep = "SELECT id FROM resonate.promises WHERE resonate._promise_timed(promises) "
    sweep += "AND timeout_at <= 0 ORDER BY timeout_at, id"
    plan = "\n".join(row[0] for row in query(server.url, f"EXPLAIN {sweep}"))
    assert "resonator_promises_due" in plan
    assert "Seq Scan" not in plan


def test_forgetting_old_computations_reads_only_the_settled_roots(server: Topology) -> None:
    assert SETTLED_ROOTS.startswith("CREATE INDEX IF NOT EXISTS resonator_roots_settled ")
    roots = ROOTS.replace("%(n)s", "1001")
    plan = "\n".join(row[0] for row in query(server.url, f"EXPLAIN {roots}"))
    assert "resonator_roots_settled" in plan
    assert "Seq Scan" not in plan and "Sort" not in plan


def test_a_drain_takes_every_message_however_many(server: Topology) -> None:
    async def drain() -> list[str]:
        connection = KeepSweeping(server.url, "exp", "paged", Link(server.url))
        connection._limit = 2  # a page of two messages: five take three pages,
        connection._tick = 3600  # each asked for at once, with no NOTIFY and no tick
        heard: list[str] = []
        all_five = asyncio.Event()

        def hear(message: str) -> None:
            heard.append(message)
            if len(heard) == 5:
                all_five.set()

        connection.recv(hear)
        await connection.start()
        try:
            await asyncio.wait_for(all_five.wait(), timeout=30)
        finally:
            await connection.stop()
        return heard

    rows = ", ".join(
        f"('t{n}', 'execute', 'poll://uni@exp/paged', 't{n}', {n}, NULL)" for n in range(4)
    )
    unblock = """('u', 'unblock', 'poll://uni@exp/paged', NULL, NULL, '{"id": "u"}')"""
    insert = "INSERT INTO resonate.outbox (key, kind, address, task_id, version, promise) VALUES "
    query(server.url, f"{insert}{rows}, {unblock}")
    messages = [json.loads(message) for message in asyncio.run(drain())]
    assert sorted(m["kind"] for m in messages) == ["execute"] * 4 + ["unblock"]
    assert query(server.url, "SELECT count(*) FROM resonate.outbox") == [(0,)]


def test_a_role_that_may_not_read_the_promises_computes_without_preloads(
    server: Topology,
) -> None:
    # resonate.sql's least-privileged role: its requests, but not its tables.
    query(server.url, "CREATE ROLE worker LOGIN IN ROLE resonate_worker")
    server.url = server.url.replace("postgres@", "worker@")
    for group, pid in (("exp", "lhs"), ("exp", "rhs"), ("ops", "ops")):
        server.worker(group, pid)
    assert server.calculate("--id", "least", ARTICLE).stdout == "-3\n"
    said = "this role may not read resonate.promises: no preloads"
    server["lhs"].wait_for(said)


def plans(url: str, requests: list[str], reset: str | None = None) -> list[str]:
    """The plan of every statement that ``requests`` (resonate_rpc's) ran, nested ones too.

    auto_explain logs each plan, and a client that asks for LOG messages gets
    them. ``reset``: a statement run first, in the same transaction, rolled
    back at the end.
    """
    said: list[str] = []
    with psycopg.connect(url) as database:
        database.add_notice_handler(lambda notice: said.append(notice.message_primary or ""))
        database.execute("LOAD 'auto_explain'")
        for setting in ("log_min_duration = 0", "log_nested_statements = on"):
            database.execute(f"SET auto_explain.{setting}")
        if reset:
            database.execute(reset.encode())
        database.execute("SET client_min_messages = log")
        for request in requests:
            database.execute("SELECT resonate.resonate_rpc(%s::jsonb)", [request])
        database.rollback()
    return said


def test_requests_keep_their_index_plans_however_many_promises_are_kept(
    server: Topology,
) -> None:
    # A task ``t`` that awaits ``a`` and ``b``, among 6,000 promises that the
    # statistics know of: enough for the planner, left to itself, to hash
    # them all to find the two.
    external = """'{"resonate:target": "poll://any@exp"}'::jsonb"""
    query(
        server.url,
        "INSERT INTO resonate.promises (id, tags, timeout_at, created_at) "
        f"SELECT 'filler' || n, {external}, 9e15, 0 FROM generate_series(1, 6000) n "
        f"UNION ALL SELECT id, {external}, 9e15, 0 FROM unnest(ARRAY['t', 'a', 'b']) id;"
        "INSERT INTO resonate.tasks (id, state, version) VALUES ('t', 'acquired', 1);"
        "INSERT INTO resonate.outbox (key, kind, address, task_id, version) "
        "SELECT 'filler' || n, 'execute', 'poll://any@exp', 'filler' || n, 0 "
        "FROM generate_series(1, 6000) n;"
        "ANALYZE resonate.promises; ANALYZE resonate.outbox",
    )
    awaits = [
        {"kind": "promise.register_callback", "data": {"awaited": id, "awaiter": "t"}}
        for id in ("a", "b")
    ]
    suspend = {"id": "t", "version": 1, "actions": awaits}
    settle = {"id": "a", "state": "resolved", "value": {"headers": {}, "data": None}}
    requests = [
        json.dumps({"kind": kind, "head": {}, "data": data})
        for kind, data in (("task.suspend", suspend), ("promise.settle", settle))
    ]

    def counting(said: list[str]) -> str:
        return next(plan for plan in said if "count(*) FILTER (WHERE pa.id IS NULL)" in plan)

    def outbox(said: list[str]) -> str:
        return next(plan for plan in said if "DELETE FROM outbox WHERE task_id" in plan)

    # task_suspend's count of the awaited promises: a lookup of each by key.
    kept = plans(server.url, requests)
    assert "Index Scan using promises_pkey" in counting(kept)
    assert "Seq Scan" not in counting(kept) and "Hash" not in counting(kept)
    # A settlement clears the outbox of the settled task's messages through our index.
    assert "resonator_outbox_task_id" in outbox(kept)
    assert "Seq Scan" not in outbox(kept)
    # Without resonate_rpc's settings, the count reads every promise.
    reset = "ALTER FUNCTION resonate.resonate_rpc(jsonb) RESET ALL; "
    reset += "ALTER FUNCTION resonate.resonate_rpc(jsonb) SET search_path = resonate, pg_temp"
    assert "Seq Scan on promises" in counting(plans(server.url, requests, reset))
    # The outbox's dead rows are vacuumed every ten seconds.
    assert query(server.url, "SHOW autovacuum_naptime") == [("10s",)]
    # Every function named in TUNING has its settings, in force in a new session.
    settings = query(
        server.url,
        "SELECT proname, proconfig FROM pg_proc WHERE pronamespace = 'resonate'::regnamespace "
        "AND proname IN ('resonate_rpc', 'dequeue_execute', 'dequeue_unblock')",
    )
    assert len(settings) == 3
    for name, config in settings:
        assert {"enable_seqscan=off", "enable_hashjoin=off", "enable_mergejoin=off"} <= set(
            config
        ), name
        assert any(name in statement for statement in TUNING)


def test_the_pool_hands_out_the_connection_returned_last(server: Topology) -> None:
    async def backends() -> tuple[int, int, int]:
        sessions = OneTrip(server.url)
        pid = "SELECT pg_backend_pid()"
        try:
            async with sessions.session() as first, sessions.session() as second:
                one = (await (await first.execute(pid)).fetchone())[0]
                two = (await (await second.execute(pid)).fetchone())[0]
            # ``second`` went back last (the ``with`` leaves it first, then ``first``).
            async with sessions.session() as next_:
                taken = (await (await next_.execute(pid)).fetchone())[0]
        finally:
            await sessions.close()
        return one, two, taken

    one, two, taken = asyncio.run(backends())
    assert one != two
    assert taken == one  # the last one returned: ``first``, which left the ``with`` last
