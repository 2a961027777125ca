"""What a durable step costs, in each way Resonator can run, measured in one run.

    uv run python bench/bench.py             # the full set: about an hour
    uv run python bench/bench.py --quick     # a reduced set: a few minutes
    uv run --group bench python bench/bench.py --publish   # and update docs/
    uv run --group bench python bench/bench.py --peers     # and Restate's and DBOS's

Modes: embedded (the SDK's in-process server); standin (the stand-in, with
exp/lhs, exp/rhs and one ops worker, each a process, on a free loopback port);
resonate (the real server, ``resonate dev``, and the same workers) when
``resonate`` is on PATH; and postgres (resonator-postgres and the same
workers) when RESONATE_PG_SQL names resonate.sql. Each mode runs alone, and
every mode is driven by the same client code. With --peers, the same
calculator on Restate and on DBOS (``bench/peers/``) too, driven by the same
code, each on its own. It measures:

- latency of balanced expressions (depth 1 to 9: 1,534 promises) and a
  chain, per mode;
- batch throughput: 200 expressions piped into ``resonator``, with --jobs 1
  and --jobs 16, per mode;
- throughput of a small expression (balanced, depth 2) with 16 in flight, per
  mode, and with 1 and 4 in flight (standin);
- requests per one-operator expression, per mode, counted at the SDK's seam in
  every process (``probe.py``, in a run of ``breakdown.py``'s own);
- history: one-operator latency after 0 up to 20,000 earlier evaluations, with
  every promise kept, and the memory each stored promise takes; then the same
  with the default retention (--keep 1000), whose memory stays flat; per mode;
- the protocol: the stand-in's CPU per request;
- batch size: 200 and 2,000 expressions piped into ``resonator --local``;
- the pool: a balanced tree of 100 ms operators, computed by 1, 2, 4 and 8
  ops workers of one slot each, per server: wall time, speed-up, the ideal,
  operators per worker, the server's CPU; then with operators of 0 ms, what
  one core of the server carries (docs/distributed.md).

It prints Markdown and writes JSON under bench/results/ (not tracked);
--publish also writes the figures into docs/benchmark.md and draws
docs/bench.png (needs the bench group, for matplotlib).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # As a script, this file's folder comes first on the path, and there
    # ``bench`` is this file, not the package ``bench/`` it imports from.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import psycopg
from resonate.resonate import DEFAULT_TTL

from bench.driver import IN_FLIGHT, WARM, Driver, balanced
from resonator.client.trees import Node, Reader, rows
from resonator.harness.processes import Topology, descendants, missing
from resonator.resonator import EXP, connect
from resonator.servers import KEEP, positive
from resonator.trace import Tracer

if TYPE_CHECKING:
    from resonator.parser import Expr

ROOT = Path(__file__).resolve().parent.parent
ONE: Expr = ("+", 1, 2)  # the one-operator expression of the history workload
SERVERS = {"standin": "stand-in", "resonate": "resonate", "postgres": "postgres"}  # by mode
# Whether each step is on disk before it is acknowledged (docs/benchmark.md
# says how that was established, with bench/fsyncs.py): of Resonator's modes
# only Postgres, which commits every request with fsync and synchronous_commit
# on (``resonate dev`` keeps it in memory); of the peers, both.
DURABLE = {
    "embedded": False,
    "standin": False,
    "resonate": False,
    "postgres": True,
    "restate": True,
    "dbos": True,
}
# Each peer computes the workloads of up to so many operators, and chains or not. Restate:
# balanced depth 5 and the chain of 32. DBOS, which polls for every result, takes seconds a
# tree past depth 4, and its worker's threads pile up: 1,537 of them after one chain of 32
# (15 s), and the machine ran out of threads at depth 6, and again during the chain's runs.
# So balanced depth 5 (31 operators) is its last, and no chain.
PEER_LIMITS = {"restate": (32, True), "dbos": (31, False)}
JOBS = (1, 16)  # --jobs of the batch throughput
# The pool: a balanced tree of operators that each take OP_DELAY seconds,
# computed by 1, 2, 4, then 8 ops workers of one slot each.
POOL_DEPTH, OP_DELAY, POOL = 6, 0.1, (1, 2, 4, 8)


def chain(operators: int) -> Expr:
    """((1 + 2) + 3) + ...: every operator waits for the one before it."""
    expr: Expr = 1
    for i in range(operators):
        expr = ("+", expr, i + 2)
    return expr


def size(expr: Expr) -> tuple[int, int]:
    """(operators, depth)"""
    match expr:
        case (_, lhs, rhs):
            (left_ops, left_depth), (right_ops, right_depth) = size(lhs), size(rhs)
            return left_ops + right_ops + 1, max(left_depth, right_depth) + 1
        case _:
            return 0, 0


def count(node: Node | None) -> int:
    return 0 if node is None else len(rows(node))


def ms(samples: list[float], p: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1] * 1000


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def health(url: str) -> dict[str, Any]:
    """The stand-in's counts, which it gives only to a caller with its token, if it has one."""
    request = urllib.request.Request(f"{url}/health")
    if token := os.environ.get("RESONATE_TOKEN"):
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


class Resonating(Driver):
    """A prompt's Resonate, in one of Resonator's modes."""

    def __init__(self, mode: str, url: str | None, keep: int | None = None) -> None:
        super().__init__(mode)
        self.url = url
        tracer = Tracer(mode)
        self.resonate, self.connection = connect(
            url, "prompt", f"bench-{mode}", DEFAULT_TTL, tracer, keep=keep
        )

    async def __aenter__(self) -> Self:
        self.resonate.start()
        if self.connection.link:
            await self.connection.link.up.wait()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.resonate.stop()

    async def compute(self, id: str, expr: Expr) -> object:
        return await self.resonate.options(target=EXP).run(id, "=", expr).result()

    async def promises(self, expr: Expr) -> int:
        """Durable promises one evaluation creates, counted on the server."""
        id, _ = await self.timed(expr)
        return count(await Reader(self.connection).tree(id))

    def footprint(self, pid: int) -> tuple[int | None, int]:
        """Promises the server holds now (None: it does not say), and the KiB it takes.

        ``pid``: the process that holds them; on Postgres, the database's size.
        """
        url = self.url
        if url is None:
            return len(self.connection.network.state.promises), rss_kib(pid)  # type: ignore[attr-defined]
        if self.mode == "postgres":
            with psycopg.connect(url, autocommit=True) as database:
                row = database.execute(
                    "SELECT count(*), pg_database_size(current_database()) / 1024 "
                    "FROM resonate.promises"
                ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])
        held = int(health(url)["promises"]) if self.mode == "standin" else None
        return held, rss_kib(pid)


# ── The measurements ────────────────────────────────────────────────────────


async def latency(driver: Driver, workloads: dict[str, Expr], runs: int) -> dict[str, Any]:
    """``{workload: {MODE_p50_ms, MODE_p95_ms}}`` for this driver's mode.

    A tree of more than 64 operators is computed fewer times, in proportion
    (three at least): depth 9 takes seconds each time.
    """
    rows = {}
    for name, expr in workloads.items():
        fewer = max(3, runs * 64 // max(64, size(expr)[0]))
        samples = await driver.latencies(expr, fewer, warmup=1 if fewer < runs else 2)
        rows[name] = {
            f"{driver.mode}_p50_ms": ms(samples, 50),
            f"{driver.mode}_p95_ms": ms(samples, 95),
        }
        print(f"  {driver.mode}, {name}: {ms(samples, 50):.1f} ms", file=sys.stderr)
    return rows


async def history(
    driver: Resonating, pid: int, checkpoints: list[int], runs: int, workers: dict[str, int]
) -> dict[str, Any]:
    """One-operator latency, promises held and memory after each number of earlier evaluations.

    ``workers``: the pids of worker processes whose memory is followed too.
    """
    points: list[dict[str, Any]] = []
    done = 0
    for checkpoint in checkpoints:
        rate = await driver.rate(ONE, 16, checkpoint - done) if checkpoint > done else None
        done = checkpoint
        # Every point is measured as warm as the others: a fill at 16 in flight
        # grows the processes' pools and the server's sessions, which the first
        # point would otherwise be measured without. The warm-up is the same
        # before every point, and counts in no point's history.
        await driver.rate(ONE, 16, WARM)
        samples = await driver.latencies(ONE, 3 * runs)  # single points: more samples
        done += 3 * runs
        point = {"after": checkpoint, "p50_ms": ms(samples, 50), "fill_per_s": rate}
        held, kib = driver.footprint(pid)
        point |= {"promises": held, "rss_kib": kib}
        points.append(point | {"workers_rss_kib": {n: rss_kib(p) for n, p in workers.items()}})
        print(f"  {driver.mode}, after {checkpoint}: {point['p50_ms']:.1f} ms", file=sys.stderr)
    first, last = points[0], points[-1]
    grown = (last["rss_kib"] - first["rss_kib"]) * 1024
    stored = (last["promises"] or 0) - (first["promises"] or 0)
    return {
        "points": points,
        "ratio_last_first": last["p50_ms"] / first["p50_ms"],
        "bytes_per_promise": grown / stored if stored > 0 else None,
    }


async def protocol(driver: Resonating, pid: int, runs: int) -> dict[str, float]:
    """Requests one operator takes, and what each costs the stand-in in CPU."""
    url = driver.url
    assert url is not None
    before, cpu = health(url)["requests"], cpu_seconds(pid)
    await driver.latencies(ONE, runs, warmup=0)
    sent = health(url)["requests"] - before
    return {
        "requests_per_operator": sent / runs,
        "stand_in_us_per_request": (cpu_seconds(pid) - cpu) / sent * 1e6,
    }


def piped(count: int, url: str | None, jobs: int | None = None) -> float:
    """Seconds for ``resonator`` to evaluate ``count`` piped expressions (``--jobs``)."""
    rng = random.Random(count)
    lines = "".join(f"{rng.randint(1, 99)} + {rng.randint(1, 99)} * 7\n" for _ in range(count))
    where = ["--url", url] if url else ["--local"]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "resonator", *where, *(["--jobs", str(jobs)] if jobs else [])],
        input=lines,
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(done.stdout.splitlines()) == count
    return time.perf_counter() - start


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure but the history's, each mode on its own."""
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "runs_per_point": args.runs,
        "piped": args.piped,
        "modes": {mode: {"durable_per_step": DURABLE[mode]} for mode in modes(args.peers)},
    }
    shapes = workloads(args)
    rows: dict[str, dict[str, Any]] = {}
    async with Resonating("embedded", None) as embedded:
        for name, expr in shapes.items():
            operators, depth = size(expr)
            promises = await embedded.promises(expr)
            rows[name] = {"workload": name, "operators": operators, "depth": depth}
            rows[name]["promises"] = promises
        for name, figures in (await latency(embedded, shapes, args.runs)).items():
            rows[name] |= figures
        report["modes"]["embedded"]["throughput_16_per_s"] = await embedded.throughput()
    report["batch_jobs"] = {"embedded": {str(n): piped(args.piped, None, n) for n in JOBS}}
    for mode in modes()[1:]:
        with Topology(SERVERS[mode]) as topology:
            topology.standard()
            async with Resonating(mode, topology.url) as driver:
                for name, figures in (await latency(driver, shapes, args.runs)).items():
                    rows[name] |= figures
                report["modes"][mode]["throughput_16_per_s"] = await driver.throughput()
                if mode == "standin":
                    report["throughput_per_s"] = {
                        str(n): await driver.rate(balanced(2), n, max(4 * n, args.runs))
                        for n in (1, 4)
                    }
                    server = topology["server"].popen.pid
                    report["protocol"] = await protocol(driver, server, args.runs)
            report["batch_jobs"][mode] = {str(n): piped(args.piped, topology.url, n) for n in JOBS}
    for peer in [mode for mode in report["modes"] if mode not in modes()]:
        await compare(peer, report, rows, shapes, args.runs)
    for mode in modes():
        report["modes"][mode]["requests_per_operator"] = requests(mode, args.runs)
    report["workloads"] = list(rows.values())
    report["batch_seconds"] = {str(n): piped(n, None) for n in args.batch}
    report["pool"] = await pools(args)
    return report


async def compare(
    peer: str,
    report: dict[str, Any],
    rows: dict[str, dict[str, Any]],
    shapes: dict[str, Expr],
    runs: int,
) -> None:
    """A peer's latencies (into ``rows``) and throughput (into ``report``), on its own."""
    from bench.peers import running

    most, chains = PEER_LIMITS[peer]
    smaller = {
        name: expr
        for name, expr in shapes.items()
        if size(expr)[0] <= most and (chains or not name.startswith("chain"))
    }
    with running(peer) as (computing, _):
        async with computing as driver:
            for name, figures in (await latency(driver, smaller, runs)).items():
                rows[name] |= figures
            report["modes"][peer]["throughput_16_per_s"] = await driver.throughput()


def requests(mode: str, runs: int) -> float:
    """Requests one operator takes in ``mode``, counted by breakdown.py in a run of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.breakdown", "--count", mode, "--runs", str(runs)],
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1])


def modes(peers: bool = False) -> list[str]:
    """The modes this machine can run: embedded, each server that is there; and the peers.

    A peer asked for that cannot run here is an error, not a column left out.
    """
    ours = ["embedded", *(mode for mode, server in SERVERS.items() if not missing(server))]
    if not peers:
        return ours
    from bench.peers import PEERS
    from bench.peers import missing as absent

    for peer in PEERS:
        if why := absent(peer):
            raise SystemExit(f"bench: --peers: cannot run {peer}: {why}")
    return [*ours, *PEERS]


def workloads(args: argparse.Namespace) -> dict[str, Expr]:
    shapes = {f"balanced depth {d}": balanced(d) for d in range(1, args.depths + 1)}
    return shapes | {f"chain of {args.chain}": chain(args.chain)}


async def remember(args: argparse.Namespace, keep: int | None) -> dict[str, Any]:
    """The history workload, each mode on a fresh server that keeps ``keep`` computations.

    ``resonate dev`` has no such setting: it keeps every promise, in both tables.
    """
    runs = {}
    embedded = Resonating("embedded", None, keep)
    async with embedded:
        runs["embedded"] = await history(embedded, os.getpid(), args.history, args.runs, {})
    for mode in modes()[1:]:
        keeping = () if mode == "resonate" else ("--keep", str(keep or 10**9))
        with Topology(SERVERS[mode], server_args=keeping) as topology:
            topology.standard()
            async with Resonating(mode, topology.url) as remote:
                pid = topology["server"].popen.pid
                workers = {name: topology[name].popen.pid for name in ("lhs", "rhs", "ops")}
                runs[mode] = await history(remote, pid, args.history, args.runs, workers)
    return runs


# ── Reporting ───────────────────────────────────────────────────────────────


NAMES = {
    "embedded": "embedded",
    "standin": "stand-in",
    "resonate": "resonate",
    "postgres": "Postgres",
    "restate": "Restate",
    "dbos": "DBOS",
}


def server_cpu(topology: Topology) -> float:
    """CPU seconds the server (every process of it) has used so far."""
    total = 0.0
    for pid in descendants(topology["server"].popen.pid):
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


async def pool(
    mode: str, depth: int, sizes: list[int], delay: float = OP_DELAY
) -> list[dict[str, Any]]:
    """Wall seconds of one balanced tree with each number of ops workers, and who ran what.

    Each worker has one slot and takes ``delay`` seconds over each operator.
    They join one by one, to the same server (each size computes a fresh
    tree), so a smaller pool's figures are taken first. The ideal is the
    work shared evenly, but never under the critical path: ``depth``
    operators one after another. The server's CPU over the run is noted too.
    """
    expr, operators = balanced(depth), 2**depth - 1
    rows: list[dict[str, Any]] = []
    with Topology(SERVERS[mode]) as topology:
        topology.server()
        for pid in ("lhs", "rhs"):
            topology.worker("exp", pid)
        async with Resonating(mode, topology.url) as driver:
            names: list[str] = []
            for size in sizes:
                while len(names) < size:
                    names.append(f"ops{len(names) + 1}")
                    topology.worker(
                        "ops", names[-1], RESONATOR_SLOTS="1", RESONATOR_OP_DELAY=str(delay)
                    )
                await driver.timed(ONE)  # each new worker's connection, once
                cpu = server_cpu(topology)
                asked = health(topology.url)["requests"] if mode == "standin" else None
                id, wall = await driver.timed(expr)
                ran = Counter(
                    t["who"] for t in topology.traces(*names) if t["id"].startswith(f"{id}:")
                )
                rows.append(
                    {
                        "workers": size,
                        "wall_s": wall,
                        "ideal_s": delay * max(depth, operators / size),
                        "operators_per_worker": [ran[f"ops/{name}"] for name in names],
                        "server_cpu_s": server_cpu(topology) - cpu,
                    }
                )
                if asked is not None:  # the stand-in counts the requests it answers
                    rows[-1]["requests"] = health(topology.url)["requests"] - asked
                print(f"  {mode}, {size} ops workers: {wall:.2f} s", file=sys.stderr)
    for row in rows:
        row["speedup"] = rows[0]["wall_s"] / row["wall_s"]
    return rows


async def pools(args: argparse.Namespace) -> dict[str, Any]:
    """The pool on each server at hand, then its ceiling: the same tree, operators of 0 ms."""
    report: dict[str, Any] = {}
    for mode in modes()[1:]:
        rows = await pool(mode, args.pool_depth, args.pool)
        fastest = await pool(mode, args.pool_depth, args.pool[-1:], delay=0.0)
        report[mode] = {"depth": args.pool_depth, "op_delay_s": OP_DELAY, "rows": rows}
        report[mode]["ceiling"] = ceiling(fastest[0], 2**args.pool_depth - 1)
    return report


def ceiling(run: dict[str, Any], operators: int) -> dict[str, Any]:
    """What one core of the server carries, from a run whose operators take no time.

    The server's CPU per operator (every request an operator's three
    promises take: its "=" on each side and itself) bounds the operators a
    second that one core can carry; a worker of one slot and 100 ms
    operators asks for at most ten a second, so that many tenths of them
    keep the core busy.
    """
    per_operator = run["server_cpu_s"] / operators
    carried = 1 / per_operator if per_operator else None
    counted = {}
    if "requests" in run:
        counted = {
            "requests_per_operator": run["requests"] / operators,
            "server_cpu_us_per_request": run["server_cpu_s"] / run["requests"] * 1e6,
        }
    return counted | {
        "workers": run["workers"],
        "wall_s": run["wall_s"],
        "operators_per_s": operators / run["wall_s"],
        "server_cpu_ms_per_operator": per_operator * 1000,
        "server_busy": run["server_cpu_s"] / run["wall_s"],
        "operators_per_s_per_core": carried,
        "workers_of_100ms_to_saturate": carried * OP_DELAY if carried else None,
    }


def markdown(report: dict[str, Any]) -> str:
    modes = report["modes"]
    # Each ratio as a column: the stand-in's to embedded, and Postgres's to the stand-in.
    pairs = (("standin", "embedded"), ("postgres", "standin"), ("postgres", "restate"))
    ratios = [(a, b) for a, b in pairs if a in modes and b in modes]
    head = (
        "| workload | operators | promises | "
        + " | ".join(f"{NAMES[mode]} p50 ms | {NAMES[mode]} p95 ms" for mode in modes)
        + "".join(f" | {NAMES[a]} / {NAMES[b]}" for a, b in ratios)
        + " |"
    )
    lines = [head, "|" + "---|" * (3 + 2 * len(modes) + len(ratios))]
    for r in report["workloads"]:  # "-" where a peer did not compute the workload
        cells = " | ".join(
            f"{r[f'{m}_p50_ms']:.1f} | {r[f'{m}_p95_ms']:.1f}" if f"{m}_p50_ms" in r else "- | -"
            for m in modes
        )
        cells += "".join(
            f" | {r[f'{a}_p50_ms'] / r[f'{b}_p50_ms']:.1f}x"
            if f"{a}_p50_ms" in r and f"{b}_p50_ms" in r
            else " | -"
            for a, b in ratios
        )
        lines.append(f"| {r['workload']} | {r['operators']} | {r['promises']} | {cells} |")
    standin = modes["standin"]["throughput_16_per_s"]
    lines += [
        "",
        "| mode | each step on disk when acknowledged | requests per one-operator expression "
        f"| per s, balanced depth 2, {IN_FLIGHT} in flight | / stand-in |",
        "|---|---|---|---|---|",
    ]
    for mode, m in modes.items():
        rate = m["throughput_16_per_s"]
        asked = f"{m['requests_per_operator']:.1f}" if "requests_per_operator" in m else "-"
        lines.append(
            f"| {NAMES[mode]} | {'yes' if m['durable_per_step'] else 'no'} "
            f"| {asked} | {rate:.1f} | {rate / standin:.2f}x |"
        )
    flights = ", ".join(f"{n} in flight: {v:.0f}/s" for n, v in report["throughput_per_s"].items())
    protocol, batch_s = report["protocol"], report["batch_seconds"]
    first, *_, last = batch_s
    jobs = [
        f"{NAMES[mode]} {s['1']:.1f} s → {s['16']:.1f} s ({s['1'] / s['16']:.1f}x)"
        for mode, s in report["batch_jobs"].items()
    ]
    lines += [
        "",
        f"Batch throughput, {report['piped']} piped expressions, --jobs 1 → --jobs 16: "
        + "; ".join(jobs)
        + ".",
        f"Throughput (balanced depth 2, stand-in), fewer in flight: {flights}.",
        f"Protocol: the stand-in spends {protocol['stand_in_us_per_request']:.0f} µs of CPU "
        "on each request.",
        "Batch size, embedded: "
        + ", ".join(f"{s:.1f} s for {n} piped expressions" for n, s in batch_s.items())
        + f" ({batch_s[last] / batch_s[first]:.1f}x).",
    ]
    for keep, runs in report["history"].items():
        points = runs["embedded"]["points"]
        lines += [
            "",
            f"History, {keep}: one-operator p50 latency after so many earlier evaluations, "
            "the rate at which those were made (16 at a time), and memory:",
            "",
            "| mode | "
            + " | ".join(f"after {p['after']:,}" for p in points)
            + " | last / first | fill rate, first / last | memory |",
            "|" + "---|" * (len(points) + 4),
        ]
        lines += [
            f"| {NAMES[mode]} | {history_row(keep, mode, run)} |" for mode, run in runs.items()
        ]
    lines += pool_lines(report["pool"])
    lines += ["", f"Measured {report['date']} on {report['machine']}."]
    return "\n".join(lines)


def pool_lines(pools: dict[str, Any]) -> list[str]:
    """The pool on each server, and the ceiling of one core of it."""
    lines: list[str] = []
    for mode, run in pools.items():
        lines += [
            "",
            f"Pool, {NAMES[mode]}: a balanced tree of depth {run['depth']} "
            f"({2 ** run['depth'] - 1} operators of {run['op_delay_s'] * 1000:.0f} ms), "
            "ops workers of one slot each:",
            "",
            "| ops workers | wall s | speed-up | ideal s | operators per worker | server CPU s |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['workers']} | {r['wall_s']:.2f} | {r['speedup']:.1f}x | {r['ideal_s']:.2f} "
            f"| {', '.join(map(str, r['operators_per_worker']))} | {r['server_cpu_s']:.2f} |"
            for r in run["rows"]
        ]
        c = run["ceiling"]
        if c["operators_per_s_per_core"]:
            lines += [
                "",
                f"Ceiling, {NAMES[mode]}: with operators of 0 ms ({c['workers']} workers), "
                f"{c['operators_per_s']:.0f} operators/s, the server busy "
                f"{c['server_busy']:.0%} of a core at {c['server_cpu_ms_per_operator']:.2f} ms "
                "of CPU per operator"
                + (
                    f" ({c['requests_per_operator']:.1f} requests of "
                    f"{c['server_cpu_us_per_request']:.0f} µs)"
                    if "requests_per_operator" in c
                    else ""
                )
                + f": one core carries {c['operators_per_s_per_core']:.0f} "
                f"operators/s, which {c['workers_of_100ms_to_saturate']:.0f} workers of "
                "100 ms operators keep busy.",
            ]
    return lines


HOLDERS = {  # what holds a mode's promises, and whose memory (or size) is shown
    "embedded": "the one process",
    "standin": "the stand-in",
    "resonate": "the server",
    "postgres": "the database",
}


def history_row(keep: str, mode: str, run: dict[str, Any]) -> str:
    """One mode's history: latencies, their ratio, fill rates and memory."""
    points = run["points"]
    latencies = " | ".join(f"{p['p50_ms']:.1f} ms" for p in points)
    rates = [p["fill_per_s"] for p in points if p["fill_per_s"]]
    fill = f"{rates[0]:.0f} / {rates[-1]:.0f} per s" if rates else "-"
    first, last = points[0], points[-1]
    holder = HOLDERS[mode]
    memory = f"{holder} {first['rss_kib'] / 1024:.0f} → {last['rss_kib'] / 1024:.0f} MiB"
    if last["promises"] is not None:
        memory += f", {last['promises']:,} promises held"
    if run["bytes_per_promise"] and keep == "every promise kept":
        memory += f" ({run['bytes_per_promise'] / 1024:.1f} KiB each)"
    if workers := last["workers_rss_kib"]:
        grew = max(workers[name] - first["workers_rss_kib"][name] for name in workers)
        memory += f"; each worker grew {grew / 1024:.0f} MiB at most"
    return f"{latencies} | {run['ratio_last_first']:.2f}x | {fill} | {memory}"


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (shapes, history) = plt.subplots(1, 2, figsize=(11, 4.5))
    styles: dict[str, Any] = {"embedded": ":", "standin": "-", "resonate": "-.", "postgres": "--"}
    styles |= {"restate": (0, (5, 1)), "dbos": (0, (1, 3))}  # the peers, when measured
    for mode, style in styles.items():
        for shape, marker in (("balanced", "o"), ("chain", "s")):
            rows = [
                r
                for r in report["workloads"]
                if r["workload"].startswith(shape) and f"{mode}_p50_ms" in r
            ]
            if rows:
                shapes.plot(
                    [r["operators"] for r in rows],
                    [r[f"{mode}_p50_ms"] for r in rows],
                    linestyle=style,
                    marker=marker,
                    label=f"{shape}, {NAMES[mode]}",
                )
    shapes.set_xscale("log", base=2)
    shapes.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:g}"))
    shapes.set_yscale("log")
    shapes.set_xlabel("operators in the expression")
    shapes.set_ylabel("p50 latency (ms)")
    shapes.set_title("latency per expression")
    shapes.grid(True, which="both", alpha=0.3)
    shapes.legend(fontsize="small")
    for mode, run in report["history"]["every promise kept"].items():
        points = run["points"]
        history.plot(
            [p["after"] for p in points], [p["p50_ms"] for p in points], "-o", label=NAMES[mode]
        )
    history.set_xlabel("earlier evaluations")
    history.set_ylabel("p50 latency of one operator (ms)")
    history.set_ylim(bottom=0)
    history.set_title("cost after history")
    history.grid(True, alpha=0.3)
    history.legend(fontsize="small")
    figure.suptitle(f"Resonator benchmark ({report['date']})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def publish(report: dict[str, Any]) -> None:
    """The figures into the page that discusses them, and the chart beside it."""
    page = ROOT / "docs" / "benchmark.md"
    text = page.read_text()
    begin, end = "<!-- bench:begin -->\n", "<!-- bench:end -->"
    head, rest = text.split(begin)
    page.write_text(head + begin + markdown(report) + "\n" + end + rest.split(end)[1])
    chart(report, ROOT / "docs" / "bench.png")
    print(f"wrote {page} and docs/bench.png", file=sys.stderr)


def sizes(text: str) -> list[int]:
    """Two or more ascending sizes, comma-separated: the report compares last with first."""
    parts = text.split(",")
    if len(parts) < 2 or not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected two or more sizes such as 0,1000, got {text!r}")
    numbers = [int(part) for part in parts]
    if numbers != sorted(set(numbers)):
        raise argparse.ArgumentTypeError(f"expected ascending sizes, got {text!r}")
    return numbers


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    cli.add_argument("--quick", action="store_true", help="a reduced set, in about a minute")
    cli.add_argument("--depths", type=positive, help="balanced depths 1..N (9; --quick 3)")
    cli.add_argument(
        "--pool",
        type=sizes,
        help="ops workers of one slot each, in turn, on each server (1,2,4,8; --quick 1,2)",
    )
    cli.add_argument(
        "--pool-depth",
        type=positive,
        help=f"the pool's balanced tree, operators of {OP_DELAY} s ({POOL_DEPTH}; --quick 3)",
    )
    cli.add_argument("--chain", type=positive, help="operators in the chain (32; --quick 8)")
    cli.add_argument("--runs", type=positive, help="evaluations per point (20; --quick 10)")
    cli.add_argument(
        "--history",
        type=sizes,
        help="earlier evaluations at each history point (0,1000,5000,20000; --quick 0,300,1000)",
    )
    cli.add_argument(
        "--piped",
        type=positive,
        default=200,
        help="expressions piped into resonator for the batch throughput, per mode (200)",
    )
    cli.add_argument(
        "--batch",
        type=sizes,
        default=[200, 2000],
        help="expressions piped into resonator --local, each size in turn (200,2000)",
    )
    cli.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / "results.json",
        help="where the numbers go (default: %(default)s, not tracked)",
    )
    cli.add_argument(
        "--peers",
        action="store_true",
        help="also the same calculator on Restate and on DBOS (bench/peers/; the bench group)",
    )
    cli.add_argument(
        "--publish",
        action="store_true",
        help="also write the figures into docs/benchmark.md and draw docs/bench.png",
    )
    args = cli.parse_args(argv)
    defaults = (
        (3, 8, 10, [0, 300, 1000], [1, 2], 3)
        if args.quick
        else (9, 32, 20, [0, 1000, 5000, 20000], list(POOL), POOL_DEPTH)
    )
    names = ("depths", "chain", "runs", "history", "pool", "pool_depth")
    for name, value in zip(names, defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    # The clients' own lines ("connected to ...") would only interleave with the figures.
    logging.getLogger("resonator").setLevel(logging.ERROR)
    report = asyncio.run(measure(args))
    report["history"] = {
        "every promise kept": asyncio.run(remember(args, None)),
        f"keeping the last {KEEP} computations": asyncio.run(remember(args, KEEP)),
    }
    print(markdown(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    if args.publish:
        publish(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
