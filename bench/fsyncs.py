"""How often each server syncs to disk: fsyncs per one-operator expression, counted with strace.

    uv run python -m bench.fsyncs            # every server at hand, 20 expressions each
    uv run python -m bench.fsyncs --runs 50 postgres resonate-sqlite

For each server it starts the article's workers, evaluates a few expressions
to warm up, then attaches ``strace -f -c -e trace=fsync,fdatasync,sync_file_range``
to the server's processes (for Postgres, the postmaster and every backend;
-f follows those it starts later), evaluates ``--runs`` one-operator
expressions one at a time, detaches, and divides the calls strace counted by
the expressions. A server that keeps each step on disk before it answers
must sync at least once for each step it acknowledges; one that syncs less
often than that can lose acknowledged steps when the machine stops.

Servers: stand-in, resonate (``resonate dev``), resonate-sqlite (``resonate
serve`` on a SQLite file), postgres (resonator-postgres), and
resonate-postgres (``resonate serve --storage-type postgres``, its tables in a
database of a resonator-postgres); and the peers of ``bench/peers/`` (with
the bench group): restate (restate-server, every thread of it) and dbos (the
Postgres it keeps its checkpoints in). It prints the settings that decide it,
as each server reports them. Needs strace (apt-get install strace).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import shutil
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

from bench import peers
from bench.bench import Resonating
from bench.breakdown import ONE, WARMUP, database
from resonator.harness.processes import RESONATE_FLAGS, Topology, free_port, missing

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from bench.driver import Driver

SERVERS = ("stand-in", "resonate", "resonate-sqlite", "postgres", "resonate-postgres")
PEERS = peers.PEERS
SYNCS = "fsync,fdatasync,sync_file_range"
# The settings that decide when each server syncs (the real server's SQLite
# pragmas are compiled in: `strings $(which resonate) | grep PRAGMA`).
SETTINGS = {
    "stand-in": "in memory: nothing is written",
    "resonate": "resonate dev: SQLite in memory",
    "resonate-sqlite": "SQLite, journal_mode=WAL, synchronous=NORMAL (compiled in)",
    # restate-server's defaults (restate-server --dump-config): its log on the
    # replicated loglet, kept by its own log-server role in RocksDB.
    "restate": "log-server: rocksdb-disable-wal-fsync=false (the default)",
}
POSTGRES = "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings "
POSTGRES += "WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method', 'full_page_writes')"


@contextlib.contextmanager
def running(server: str) -> Iterator[tuple[Driver, Callable[[], list[int]], str]]:
    """``server`` and what computes on it: a driver, what to trace, its settings."""
    if server in PEERS:
        with peer(server) as found:
            yield found
        return
    with resonating(server) as (topology, pids, settings):
        yield Resonating(server, topology.url), pids, settings


@contextlib.contextmanager
def peer(server: str) -> Iterator[tuple[Driver, Callable[[], list[int]], str]]:
    """A peer of ``bench/peers/``: its driver, what to trace, its settings."""
    from bench.peers import running as computing

    with computing(server) as (driver, topology):
        if server == "restate":
            process = topology["restate"].popen.pid
            yield driver, lambda: [process], SETTINGS["restate"]
        else:  # DBOS, on a resonator-postgres
            settings = database(topology.url, POSTGRES)[0][0]
            yield driver, lambda: backends(topology.postmaster()), settings


@contextlib.contextmanager
def resonating(server: str) -> Iterator[tuple[Topology, Callable[[], list[int]], str]]:
    """``server`` and the article's workers: the topology, what to trace, its settings."""
    kind = "postgres" if server == "resonate-postgres" else server
    with Topology(kind) as topology:
        process = topology.server()
        settings = SETTINGS.get(server, "")

        def pids() -> list[int]:
            if kind == "postgres":  # the postmaster and the backends it has started
                return backends(topology.postmaster())
            return [process.popen.pid]

        if kind == "postgres":
            settings = database(topology.url, POSTGRES)[0][0]
        if server == "resonate-postgres":
            database(topology.url, "CREATE DATABASE serve")
            store = topology.url.rpartition("/")[0] + "/serve"
            port = free_port()
            command = ["resonate", "serve", "--storage-type", "postgres"]
            command += ["--storage-postgres-url", store, "--server-port", str(port)]
            serve = topology.start("serve", [*command, *RESONATE_FLAGS])
            serve.wait_for("Server listening ")
            topology.url = f"http://127.0.0.1:{port}"
        for group, pid in (("exp", "lhs"), ("exp", "rhs"), ("ops", "ops")):
            topology.worker(group, pid)
        yield topology, pids, settings


def backends(postmaster: int) -> list[int]:
    """The postmaster and the processes it started."""
    children = subprocess.run(
        ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
    )
    return [postmaster, *map(int, children.stdout.split())]


async def evaluate(driver: Driver, runs: int, pids: Callable[[], list[int]]) -> dict[str, int]:
    """Warm up, then ``runs`` expressions with strace attached to ``pids()``: its counts."""
    async with driver:
        await driver.latencies(ONE, 0, warmup=WARMUP)
        attach = [arg for pid in pids() for arg in ("-p", str(pid))]
        tracer = subprocess.Popen(
            ["strace", "-f", "-c", "-e", f"trace={SYNCS}", *attach],
            stderr=subprocess.PIPE,
            text=True,
        )
        await asyncio.sleep(1)  # strace has no line to wait for; it attaches in well under this
        await driver.latencies(ONE, runs, warmup=0)
        tracer.send_signal(signal.SIGINT)
        _, said = tracer.communicate(timeout=30)
    # strace -c's table: % time, seconds, usecs/call, calls, [errors,] syscall.
    row = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", re.M)
    return {call: int(calls) for calls, call in row.findall(said) if call != "total"}


def available(server: str) -> bool:
    if server == "resonate-postgres":
        return available("postgres") and available("resonate")
    if server in PEERS:
        return peers.missing(server) is None
    return missing(server) is None


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    every = (*SERVERS, *PEERS)
    cli.add_argument("servers", nargs="*", help=f"of {', '.join(every)} (all at hand)")
    cli.add_argument("--runs", type=int, default=20, help="expressions counted (20)")
    args = cli.parse_args(argv)
    logging.getLogger("resonator").setLevel(logging.ERROR)  # not its "connected to" lines
    if not shutil.which("strace"):
        print("fsyncs: strace is not installed (apt-get install strace)", file=sys.stderr)
        return 1
    servers = args.servers or [server for server in every if available(server)]
    print("| server | syncs per one-operator expression | by call | settings |")
    print("|---|---|---|---|")
    for server in servers:
        with running(server) as (driver, pids, settings):
            counts = asyncio.run(evaluate(driver, args.runs, pids))
        total = sum(counts.values()) / args.runs
        calls = ", ".join(f"{call} {n / args.runs:.1f}" for call, n in counts.items()) or "none"
        print(f"| {server} | {total:.1f} | {calls} | {settings} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
