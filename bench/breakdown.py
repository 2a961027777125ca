"""Where the time of a durable step goes, request by request; and what each cut buys.

    uv run python -m bench.breakdown                # the stand-in and Postgres, 40 runs each
    uv run python -m bench.breakdown --variant before --runs 100
    uv run python -m bench.breakdown --compare standin postgres before --rounds 10

The breakdown runs one-operator expressions, one at a time, with every
process (the prompt here; exp/lhs, exp/rhs and ops, each a process of its
own) probed at the SDK's seams (``probe.py``): every request it sends and
every message it is handed is timed, and on Postgres also every session it
takes from its ``PgSessions`` and every NOTIFY it hears. The database adds
its own view: the time spent in each of resonate.sql's functions
(``track_functions``), each statement's own (``pg_stat_statements``), and
its WAL syncs (``pg_stat_io``).

For each expression it follows the critical path back from the answer: the
message that brought it, the request that sent that message, the requests
before that one in the same run of the same task, the message that began
that run, and so on back to the ``task.create`` that began it all. Each
millisecond of the path is a request of some kind, a delivery (from the start
of the request that sent a message to the moment the SDK is handed it, less
the part of that request already counted), or the processes' own work
between them.

--compare runs several variants side by side, each on a server and workers of
its own, interleaved: a few expressions on each in turn, round after round,
so that a busy machine slows them all alike. A variant is ``standin``,
``postgres``, or ``postgres`` with what Resonator's Postgres connection does
taken back (``+no-onetrip``, ``+no-drain``, ``+no-preload``; ``before`` is all
three; ``+prepare-N``, ``+sdk-heartbeat``: see ``probe.variant``), or with
settings of Postgres given (``postgres@commit_delay=100,...``; one that
needs a restart gets it).
It prints, per variant, the median over the rounds of three figures (the p50
latency of a one-operator expression, of a depth-4 one, and the evaluations
per second of depth-2 ones with 16 in flight), their interquartile range, and
each figure's median ratio to the first variant's in the same round.

It needs RESONATE_PG_SQL for Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from bench.probe import PROBE, VARIANT, Events, Probe, variant

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from resonate.resonate import Resonate

    from resonator.harness.processes import Topology
    from resonator.parser import Expr

ROOT = Path(__file__).resolve().parent.parent
ONE: Expr = ("+", 1, 2)
WARMUP = 5
WORKERS = (("exp", "lhs"), ("exp", "rhs"), ("ops", "ops"))
# What the database counts while the breakdown runs (the first needs a restart).
TRACKING = "shared_preload_libraries=pg_stat_statements,track_functions=all,"
TRACKING += "track_io_timing=on,track_wal_io_timing=on"
# The function of resonate.sql that each kind of request calls.
FUNCTIONS = {
    "task.create": "task_create",
    "task.acquire": "task_acquire",
    "task.fence": "task_fence",
    "task.heartbeat": "task_heartbeat",
    "task.suspend": "task_suspend",
    "task.fulfill": "task_fulfill",
    "task.release": "task_release",
    "promise.register_listener": "promise_register_listener",
}
OWN = "the processes' own work"


# ── Servers, workers and a prompt ───────────────────────────────────────────


@contextlib.contextmanager
def topology(spec: str, env: dict[str, str]) -> Iterator[Topology]:
    """A server for ``spec`` (``standin``, or ``postgres[+...][@setting=value,...]``); workers."""
    from resonator.harness.processes import Topology, python, started

    server, _, settings = spec.partition("@")
    kinds = {"standin": "stand-in", "resonate": "resonate"}
    with Topology(kinds.get(server, "postgres")) as running:
        running.server()
        if settings:
            assign = [setting.partition("=") for setting in settings.split(",")]
            database(running.url, *(f"ALTER SYSTEM SET {k} = '{v}'" for k, _, v in assign))
            database(running.url, "SELECT pg_reload_conf()")
            restart = "SELECT count(*) FROM pg_settings WHERE pending_restart"
            if database(running.url, restart)[0][0]:
                running["server"].signal(signal.SIGTERM)  # the same files, the same port
                running["server"].wait_closed()
                running.server()
        for group, pid in WORKERS:
            command = python("-m", "bench.probe")
            own = {"GRP": group, "PID": pid, VARIANT: server, "PYTHONPATH": str(ROOT)}
            running.start(pid, command, env | own)
        for group, pid in WORKERS:
            started(running[pid], group, pid)
        yield running


def database(url: str, *queries: str) -> list[Any]:
    """The rows of the last of ``queries``, each run on its own."""
    rows: list[Any] = []
    with psycopg.connect(url, autocommit=True) as connection:
        for query in queries:
            cursor = connection.execute(query.encode())
            rows = cursor.fetchall() if cursor.description else []
    return rows


@contextlib.asynccontextmanager
async def prompt(url: str | None, name: str) -> AsyncIterator[Resonate]:
    from resonate.resonate import DEFAULT_TTL

    from resonator.resonator import EXP, connect
    from resonator.trace import Tracer

    resonate, connection = connect(url, "prompt", name, DEFAULT_TTL, Tracer(name))
    resonate.start()
    if connection.link:
        await connection.link.up.wait()
    try:
        yield resonate.options(target=EXP)
    finally:
        await resonate.stop()


# ── The breakdown ───────────────────────────────────────────────────────────


def measure(spec: str, runs: int, folder: Path) -> dict[str, Any]:
    """``runs`` one-operator expressions on ``spec``, every process probed: what was seen."""
    events = folder / f"{spec}.jsonl"
    events.unlink(missing_ok=True)
    variant(spec.partition("@")[0])
    Probe.install(Events(str(events), "prompt"))
    postgres = spec.partition("@")[0].partition("+")[0] not in ("standin", "resonate")
    if spec == "embedded":  # everything in this process
        windows = asyncio.run(evaluate(None, runs))
        return {"windows": windows, "events": [json.loads(line) for line in events.open()]}
    tracked = f"{spec}{',' if '@' in spec else '@'}{TRACKING}" if postgres else spec
    with topology(tracked, {PROBE: str(events)}) as running:
        if postgres:
            database(running.url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        windows = asyncio.run(evaluate(running.url, runs))
        found: dict[str, Any] = {"windows": windows}
        if postgres:
            # Each backend reports its counts at most once a second, once idle.
            time.sleep(2.5)
            found |= {key: database(running.url, query) for key, query in STATISTICS.items()}
    found["events"] = [json.loads(line) for line in events.read_text().splitlines()]
    return found


STATISTICS = {
    "functions": "SELECT funcname, sum(calls)::float, sum(total_time)::float "
    "FROM pg_stat_user_functions WHERE schemaname = 'resonate' GROUP BY funcname",
    "wal": "SELECT sum(fsyncs)::float, sum(fsync_time)::float, sum(writes)::float, "
    "sum(write_time)::float FROM pg_stat_io WHERE object = 'wal'",
    "since": "SELECT extract(epoch FROM now() - stats_reset)::float FROM pg_stat_io LIMIT 1",
    # The statements' own time in the database (their commits come after it).
    "statements": "SELECT CASE WHEN query LIKE '%dequeue_%' THEN 'the drain' "
    "WHEN query LIKE '%process_timeouts%' THEN 'the timer sweep' ELSE 'a request' END, "
    "sum(calls)::float, sum(total_exec_time)::float FROM pg_stat_statements "
    "WHERE query LIKE '%resonate.%' AND query NOT LIKE '%pg_stat%' GROUP BY 1",
    "settings": "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', "
    "'synchronous_commit', 'wal_sync_method', 'full_page_writes', 'commit_delay')",
}


async def evaluate(url: str | None, runs: int) -> list[tuple[float, float]]:
    """``runs`` one-operator expressions one after another: when each began and ended."""
    windows = []
    async with prompt(url, "breakdown") as resonate:
        for n in range(WARMUP + runs):
            if n == WARMUP and url and url.startswith("postgresql"):
                database(url, "SELECT pg_stat_reset(), pg_stat_reset_shared('io')")
                database(url, "SELECT pg_stat_statements_reset()")
            start = time.monotonic()
            await resonate.run(f"breakdown-{n}", "=", ONE).result()
            windows.append((start, time.monotonic()))
    return windows[WARMUP:]


def parent(id: str) -> str | None:
    """The promise whose function created promise ``id``: R:1 for R:1.3, R for R:1."""
    origin, colon, lineage = id.partition(":")
    if not colon:
        return None
    above, dot, _ = lineage.rpartition(".")
    return f"{origin}:{above}" if dot else origin


def emitter(message: dict[str, Any], requests: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The request that sent ``message``: of those that could have, the last begun before it."""
    if "promise" in message:  # the promise settled: told to its listener
        could = (
            r for r in requests if r["kind"] == "task.fulfill" and r["id"] == message["promise"]
        )
    elif message["v"] == 0:  # a new task: its promise was created by a fence
        could = (
            r for r in requests if r["sub"] == "promise.create" and r["child"] == message["task"]
        )
    else:  # a task resumed: a promise it awaited settled
        could = (
            r
            for r in requests
            if r["kind"] == "task.fulfill" and parent(r["id"]) == message["task"]
        )
    # A message may be handed over before its sender has read its answer.
    return max((r for r in could if r["t0"] <= message["t"]), key=lambda r: r["t0"], default=None)


def path(window: tuple[float, float], events: list[dict[str, Any]]) -> dict[str, float]:
    """An expression's critical path: milliseconds of each kind, from its end back to its start."""
    start, end = window
    inside = [e for e in events if start <= e.get("t0", e.get("t", 0)) <= end]
    requests = sorted((e for e in inside if e["e"] == "req"), key=lambda e: e["t0"])
    messages = [e for e in inside if e["e"] == "msg"]
    spent: dict[str, float] = defaultdict(float)
    cursor = end

    def back_to(when: float, what: str) -> None:
        nonlocal cursor
        spent[what] += max(cursor - when, 0) * 1000
        cursor = min(cursor, when)

    at = max((m for m in messages if m["p"] == "prompt" and "promise" in m), key=lambda m: m["t"])
    back_to(at["t"], OWN)
    while (sender := emitter(at, requests)) is not None:
        back_to(sender["t1"], "delivery")
        # Back through the run of the task that sent it, in the process that ran it.
        task, where = sender["id"], sender["p"]
        began = max(
            (
                m
                for m in messages
                if m["p"] == where and m.get("task") == task and m["t"] <= sender["t0"]
            ),
            key=lambda m: m["t"],
            default=None,
        )
        for request in reversed(requests):
            ours = request["id"] == task or (
                request["kind"] == "task.create" and request["child"] == task
            )
            since = began["t"] if began else start
            if request["p"] == where and ours and since <= request["t0"] <= sender["t0"]:
                back_to(request["t1"], OWN)
                back_to(request["t0"], request["kind"])
        if began is None:
            break
        back_to(began["t"], OWN)
        at = began
    back_to(start, OWN)
    return spent


def breakdown(spec: str, found: dict[str, Any]) -> dict[str, Any]:
    """What one mode's run found, per expression."""
    windows, events = found["windows"], found["events"]
    runs = len(windows)
    inside = [e for e in events if windows[0][0] <= e.get("t0", e.get("t", 0)) <= windows[-1][1]]
    client: dict[str, list[float]] = defaultdict(list)
    for e in inside:
        if e["e"] == "req":
            client[e["kind"]].append(e["t1"] - e["t0"])
        elif e["e"] == "session" and e["name"] != "request":
            client["the drain" if e["name"] == "dequeue" else "the timer sweep"].append(
                e["t1"] - e["t0"]
            )
    paths = [path(window, events) for window in windows]
    report: dict[str, Any] = {
        "p50_ms": statistics.median((b - a) * 1000 for a, b in windows),
        "rows": {
            kind: {"per_expression": len(times) / runs, "client_ms": statistics.mean(times) * 1000}
            for kind, times in client.items()
        },
        "path_ms": {
            k: sum(p.get(k, 0) for p in paths) / runs for k in {k for p in paths for k in p}
        },
    }
    if "functions" in found:
        # A request's time in its function of resonate.sql; the drain's and the
        # sweep's, their statement's (the drain's calls three functions).
        calls = {name: total / n for name, n, total in found["functions"] if n}
        calls |= {name: total / n for name, n, total in found["statements"] if n}
        drains = [e["statements"] for e in inside if e["e"] == "session" and e["name"] == "dequeue"]
        calls["the drain"] *= statistics.mean(drains)  # one statement a drain, or three
        for kind, row in report["rows"].items():
            if (spent := calls.get(FUNCTIONS.get(kind, kind))) is not None:
                row["database_ms"] = spent
        fsyncs, fsync_ms, writes, write_ms = found["wal"][0]
        report["wal"] = {
            "fsyncs_per_s": fsyncs / found["since"][0][0],
            "fsyncs_per_expression": fsyncs / runs,
            "ms_per_fsync": fsync_ms / fsyncs if fsyncs else 0,
            "ms_per_write": write_ms / writes if writes else 0,
        }
        report["settings"] = dict(found["settings"])
        report["request_ms"] = calls["a request"]
        report["message"] = deliveries(inside)
    return report


def deliveries(inside: list[dict[str, Any]]) -> dict[str, float]:
    """A message's way, in ms (medians), from the moment its sender has the answer to its request.

    The NOTIFY goes out as the request commits, which may be before its answer
    is read (a negative first leg).
    """
    requests = [e for e in inside if e["e"] == "req"]
    notifies = [e["t"] for e in inside if e["e"] == "notify"]
    sessions = [e for e in inside if e["e"] == "session"]
    legs: dict[str, list[float]] = defaultdict(list)
    for message in (e for e in inside if e["e"] == "msg"):
        sender = emitter(message, requests)
        committing = [
            s
            for s in sessions
            if sender
            and s["p"] == sender["p"]
            and s["name"] == "request"
            and sender["t0"] <= s["t0"] <= s["t1"] <= sender["t1"]
        ]
        drains = [
            s
            for s in sessions
            if s["p"] == message["p"] and s["name"] == "dequeue" and s["t1"] <= message["t"]
        ]
        if not committing or not drains:
            continue
        commit, drain = committing[-1]["commit"], max(drains, key=lambda s: s["t1"])
        heard = min((t for t in notifies if commit <= t <= drain["t0"]), default=None)
        if heard is None or sender is None:  # woken by the tick, or by another NOTIFY
            continue
        answered = sender["t1"]
        legs["answer → NOTIFY heard"].append(heard - answered)
        legs["NOTIFY → drain begins"].append(drain["t0"] - heard)
        legs["the drain"].append(drain["t1"] - drain["t0"])
        legs["drain → the SDK has it"].append(message["t"] - drain["t1"])
        legs["answer → the SDK has it"].append(message["t"] - answered)
    return {leg: statistics.median(times) * 1000 for leg, times in legs.items()}


def markdown(reports: dict[str, dict[str, Any]]) -> str:
    """The tables: per request kind, the critical path, and Postgres's commits and messages."""
    specs = list(reports)
    kinds = sorted(
        {k for r in reports.values() for k in r["rows"]},
        key=lambda k: (
            k.startswith("the "),
            -max(r["rows"].get(k, {}).get("per_expression", 0) for r in reports.values()),
        ),
    )
    head = "| request | " + " | ".join(
        f"{s}: per expression | {s}: client ms | {s}: database ms" for s in specs
    )
    lines = [head + " |", "|---|" + "---|---|---|" * len(specs)]
    for kind in kinds:
        cells = []
        for s in specs:
            row = reports[s]["rows"].get(kind)
            if row is None:
                cells.append("- | - | -")
                continue
            db = f"{row['database_ms']:.2f}" if "database_ms" in row else "-"
            cells.append(f"{row['per_expression']:.2f} | {row['client_ms']:.2f} | {db}")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    parts = sorted(
        {k for r in reports.values() for k in r["path_ms"]},
        key=lambda k: (k in (OWN, "delivery"), k),
    )
    lines += [
        "",
        "| the critical path, ms | " + " | ".join(specs) + " |",
        "|---|" + "---|" * len(specs),
    ]
    for part in parts:
        lines.append(
            f"| {part} | "
            + " | ".join(f"{reports[s]['path_ms'].get(part, 0):.1f}" for s in specs)
            + " |"
        )
    lines.append(
        "| total (mean) | "
        + " | ".join(f"{sum(reports[s]['path_ms'].values()):.1f}" for s in specs)
        + " |"
    )
    lines.append("| p50 | " + " | ".join(f"{reports[s]['p50_ms']:.1f}" for s in specs) + " |")
    for s in specs:
        if wal := reports[s].get("wal"):
            settings = ", ".join(f"{k}={v}" for k, v in reports[s]["settings"].items())
            way = "; ".join(f"{leg} {ms:.2f}" for leg, ms in reports[s]["message"].items())
            lines += [
                "",
                f"{s}: a request's statement takes {reports[s]['request_ms']:.2f} ms in the "
                "database, its commit aside (pg_stat_statements).",
                f"{s}: {wal['fsyncs_per_expression']:.1f} WAL fsyncs per expression, "
                f"{wal['ms_per_fsync']:.2f} ms each ({wal['fsyncs_per_s']:.0f} per second "
                f"while it ran); {settings}.",
                f"{s}, a message's way (ms, medians): {way}.",
            ]
    return "\n".join(lines)


# ── Variants side by side ───────────────────────────────────────────────────


def drive(url: str, spec: str) -> None:
    """A prompt for --compare: evaluates what stdin asks, says what it measured on stdout."""
    from bench.bench import Resonating
    from bench.driver import balanced

    variant(spec.partition("@")[0])
    logging.getLogger("resonator").setLevel(logging.ERROR)

    async def serve() -> None:
        async with Resonating(spec.partition("+")[0], url) as driver:
            while line := await asyncio.to_thread(sys.stdin.readline):
                what, depth, count = line.split()
                expr = balanced(int(depth))
                if what == "latency":
                    answer = statistics.median(await driver.latencies(expr, int(count), warmup=0))
                else:
                    answer = await driver.rate(expr, 16, int(count))
                print(answer, flush=True)

    asyncio.run(serve())


FIGURES = {
    "depth 1, p50 ms": "latency 1 7",
    "depth 4, p50 ms": "latency 4 3",
    "16 in flight, per s": "rate 2 48",
}


def compare(specs: list[str], rounds: int) -> str:
    """The variants' figures, side by side, each measured in turn, round after round."""
    from resonator.harness.processes import python

    with contextlib.ExitStack() as stack:
        prompts = {}
        for spec in specs:
            running = stack.enter_context(topology(spec, {}))
            command = python("-m", "bench.breakdown", "--drive", running.url, spec)
            prompts[spec] = stack.enter_context(
                subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=os.environ | {"PYTHONPATH": str(ROOT)},
                )
            )
            stack.callback(prompts[spec].kill)

        def ask(spec: str, what: str) -> float:
            prompt = prompts[spec]
            assert prompt.stdin is not None and prompt.stdout is not None
            prompt.stdin.write(what + "\n")
            prompt.stdin.flush()
            return float(prompt.stdout.readline())

        for spec in specs:
            ask(spec, "latency 1 5")
            ask(spec, "latency 4 1")
        seen: dict[str, dict[str, list[float]]] = {s: defaultdict(list) for s in specs}
        for round in range(rounds):
            for figure, what in FIGURES.items():
                for spec in specs if round % 2 == 0 else specs[::-1]:
                    answer = ask(spec, what)
                    seen[spec][figure].append(answer * 1000 if what.startswith("lat") else answer)
            print(f"round {round + 1} of {rounds}", file=sys.stderr)
    lines = [
        "| variant | " + " | ".join(f"{f} | ratio" for f in FIGURES) + " |",
        "|---|" + "---|---|" * len(FIGURES),
    ]
    for spec in specs:
        cells = []
        for figure in FIGURES:
            values, base = seen[spec][figure], seen[specs[0]][figure]
            q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
            ratio = statistics.median(v / b for v, b in zip(values, base, strict=True))
            cells.append(f"{statistics.median(values):.1f} ({q1:.1f} to {q3:.1f}) | {ratio:.2f}x")
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    cli.add_argument("--runs", type=int, default=40, help="expressions per variant (40)")
    cli.add_argument(
        "--variant",
        action="append",
        help="a variant to break down (standin and postgres, unless given; repeatable)",
    )
    cli.add_argument("--compare", nargs="+", metavar="VARIANT", help="variants side by side")
    cli.add_argument("--rounds", type=int, default=10, help="rounds of --compare (10)")
    cli.add_argument("--events", type=Path, help="keep the probes' events in this folder")
    cli.add_argument("--count", metavar="MODE", help="print requests per expression, and stop")
    cli.add_argument("--drive", nargs=2, help=argparse.SUPPRESS)
    args = cli.parse_args(argv)
    if args.drive:
        drive(*args.drive)
        return 0
    logging.getLogger("resonator").setLevel(logging.ERROR)
    if args.compare:
        print(compare(args.compare, args.rounds))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.events or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        if args.count:
            found = measure(args.count, args.runs, folder)
            start, end = found["windows"][0][0], found["windows"][-1][1]
            sent = [e for e in found["events"] if e["e"] == "req" and start <= e["t0"] <= end]
            print(len(sent) / args.runs)
            return 0
        reports = {}
        for spec in args.variant or ["standin", "postgres"]:
            reports[spec] = breakdown(spec, measure(spec, args.runs, folder))
            print(f"{spec}: p50 {reports[spec]['p50_ms']:.1f} ms", file=sys.stderr)
    print(markdown(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
