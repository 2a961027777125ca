"""Faults on purpose: Resonator on hosts of its own, killed and cut off at random, then checked.

    uv run python tests/chaos.py --server stand-in --minutes 6
    uv run python tests/chaos.py --server postgres --minutes 1 --out chaos.json

It needs root: each process runs on a host of its own, a network namespace
on one switch (``tests/hosts.py``). The server has a host (the stand-in with
a token, Postgres with a password, or ``resonate serve`` on SQLite with a
signed token), and so do exp/lhs, exp/rhs, two ops workers and four prompts,
each of which computes one random expression after another: four in flight,
so that a worker holds tasks of several computations. Leases last 3 s, and
each ops worker takes 0 to 5 s over every operator (drawn each time it
starts), so that operators outlive their leases and only heartbeats keep them.

Every 3 to 7 s, one fault: a worker or a prompt killed with SIGKILL (started
again a second or three later; a prompt with the same id, which attaches to
its computation), or a host's cable cut, for 1 to 2.5 s or for 4 to 12 s. On
Postgres and the real server, about once a minute, the database or the server
is killed with SIGKILL too, and started again on its files. (The stand-in
keeps everything in memory: killing it would forget every computation.)

Then the faults stop, every cable is put back, every process is running
again, and each computation has two minutes to answer. It checks that:

- every answer is Python's for the same expression, and none hung;
- every operator that ran more than once has a fault to explain it, from the
  workers' trace lines and the log of faults: while an earlier run of it was
  under way, the process running it was killed, or its host or the server's
  was cut off for at least half a lease, or the server was killed. (A cut
  shorter than half a lease must cost no run: docs/distributed.md.)
- no process printed a traceback;
- no worker's memory grew: each that lived a minute ended within 10 MiB of
  what it held after its first 30 seconds.

It prints one row of a table (docs/reliability.md), writes the figures as
JSON (``--out``), and exits 0 only if every check held. Whatever way it ends,
every process and every namespace it made is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from resonator.harness.processes import TRACE, Topology, Transcript, missing, python

# The tests' namespace harness and oracle live under tests/, beside this
# folder, which is not installed: the project's root goes on the path first.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.helpers import jwt_keys, oracle, signed  # noqa: E402
from tests.hosts import Hosts, Unavailable  # noqa: E402

SERVERS = {"stand-in": "stand-in", "postgres": "postgres", "resonate": "resonate-sqlite"}
LEASE = 3.0  # seconds
WORKERS = {"lhs": "exp", "rhs": "exp", "o1": "ops", "o2": "ops"}
PROMPTS = ("p1", "p2", "p3", "p4")
DRAIN = 120.0  # seconds each computation may take to answer once the faults stop
GROWTH = 10 * 1024  # KiB a worker's memory may grow between its 30th second and its end


class Timed(Transcript):
    """A transcript that also notes when each line was read, and the pid of who printed it."""

    def __init__(self, topology: Topology) -> None:
        super().__init__()
        self.topology = topology
        self.timed: list[tuple[float, str, int, str]] = []  # (when, name, pid, line)

    def add(self, name: str, line: str) -> None:
        # A process killed is read to its end before another of its name starts.
        pid = self.topology.processes[name].popen.pid
        with self.changed:
            self.timed.append((time.monotonic(), name, pid, line))
        super().add(name, line)


@dataclass
class Fault:
    kind: str  # "kill" or "cut"
    target: str  # a process's name, or a host's
    start: float
    end: float
    process: int = 0  # the pid of the process killed


@dataclass
class Report:
    server: str
    minutes: float
    right: int = 0
    total: int = 0
    wrong: int = 0
    hung: int = 0
    kills: int = 0
    server_kills: int = 0
    cuts: int = 0
    reruns: int = 0
    unexplained_reruns: int = 0
    tracebacks: int = 0
    memory_growth_kib: int = 0
    details: list[str] = field(default_factory=list)

    def failed(self) -> bool:
        return bool(self.wrong or self.hung or self.unexplained_reruns or self.tracebacks) or (
            self.memory_growth_kib > GROWTH
        )


def expression(rng: random.Random) -> str:
    """A random expression of one to six operators on small numbers, some negative."""

    def build(operators: int) -> str:
        if operators == 0:
            return str(rng.randint(-9, 99))
        left = rng.randint(0, operators - 1)
        return f"({build(left)} {rng.choice('+-*')} {build(operators - 1 - left)})"

    return build(rng.randint(1, 6))


class Chaos:
    """The topology on its hosts, the faults, the computations, and what they came to."""

    def __init__(self, server: str, minutes: float, seed: int, scratch: Path) -> None:
        self.rng = random.Random(seed)
        self.minutes = minutes
        self.report = Report(server, minutes)
        self.faults: list[Fault] = []
        self.stopping = threading.Event()  # the faults are over: lanes start nothing new
        self.lock = threading.Lock()  # one process started or killed at a time
        self.hosts = Hosts("db", *WORKERS, *PROMPTS)
        env = {"RESONATOR_TTL": str(LEASE)}
        self.topology = Topology(SERVERS[server], self.credentials(server, scratch, env), **env)
        self.topology.transcript = Timed(self.topology)
        self.born: dict[int, float] = {}  # worker pid -> when it started
        self.rss: dict[int, list[tuple[float, int]]] = {}  # worker pid -> (age, KiB) samples
        self.given_up = False  # the drain is over: what is still computing hung

    def credentials(self, server: str, scratch: Path, env: dict[str, str]) -> tuple[str, ...]:
        """The server's arguments for them, and what every process shows, in ``env``.

        Postgres on a host of its own asks for a password, which its URL carries.
        """
        if server == "stand-in":
            env["RESONATE_TOKEN"] = os.urandom(16).hex()
        elif server == "resonate":
            key, public = jwt_keys(scratch)
            env["RESONATE_TOKEN"] = signed({"prefix": "", "exp": int(time.time()) + 86400}, key)
            return ("--auth-publickey", str(public))
        return ()

    # ── Starting ──

    def start(self) -> None:
        self.topology.host = self.hosts.addresses["db"]
        self.topology.where = {name: self.hosts.on(name) for name in (*WORKERS, *PROMPTS)}
        self.topology.where["server"] = self.hosts.on("db")
        self.topology.server()
        for name in WORKERS:
            self.worker(name)

    def worker(self, name: str) -> None:
        with self.lock:
            running = self.topology.processes.get(name)
            if running is not None and running.popen.poll() is None:
                return  # started again already, by drain(), before this timer fired
            ops = WORKERS[name] == "ops"
            delay = {"RESONATOR_OP_DELAY": f"{self.rng.uniform(0, 5):.1f}"} if ops else {}
            process = self.topology.worker(WORKERS[name], name, wait=False, **delay)
            self.born[process.popen.pid] = time.monotonic()

    # ── The computations ──

    def lane(self, name: str, count: list[int]) -> None:
        """One prompt's computations, one after another, until the faults stop."""
        while not self.stopping.is_set():
            with self.lock:
                count[0] += 1
                id, text = f"chaos-{count[0]}", expression(self.rng)
            self.compute(name, id, text)

    def compute(self, name: str, id: str, text: str) -> None:
        """Compute ``text`` as ``id`` on prompt ``name``, attaching again each time it is killed."""
        while True:
            with self.lock:
                if self.given_up:
                    self.judge(id, text, None, f"{id} = {text}: no answer {DRAIN:.0f} s on")
                    return
                prompt = self.topology.start(name, python("-m", "resonator", "--id", id, text))
            status = prompt.wait_closed(timeout=None)
            said = [line for line in prompt.lines if not line.startswith(("connected", "cannot"))]
            if status == 0 and said and said[-1].lstrip("-").isdigit():
                self.judge(id, text, int(said[-1]), f"{id} = {text}: printed {said[-1]}")
                return
            errors = [line for line in said if line.startswith("error:")]
            if errors:
                self.judge(id, text, None, f"{id} = {text}: {errors[-1]}")
                return
            # Killed, or turned away while its server or its cable was down: again.
            time.sleep(self.rng.uniform(0.5, 2))

    def judge(self, id: str, text: str, value: int | None, said: str) -> None:
        right = oracle(text)
        with self.lock if not self.given_up else contextlib.nullcontext():
            self.report.total += 1
            if value == right:
                self.report.right += 1
            elif "no answer" in said:
                self.report.hung += 1
                self.report.details.append(said)
            else:
                self.report.wrong += 1
                self.report.details.append(f"{said}, not {right}")

    # ── The faults ──

    def inject(self) -> None:
        """Faults every 3 to 7 s until the time is up; the server's own about once a minute."""
        until = time.monotonic() + 60 * self.minutes
        next_server = time.monotonic() + self.rng.uniform(40, 80)
        while (now := time.monotonic()) < until:
            time.sleep(min(self.rng.uniform(3, 7), max(until - now, 0)))
            if self.topology.kind != "stand-in" and time.monotonic() >= next_server:
                self.kill_server()
                next_server = time.monotonic() + self.rng.uniform(40, 80)
            elif self.rng.random() < 0.5:
                self.kill(self.rng.choice([*WORKERS, *PROMPTS]))
            else:
                self.cut(self.rng.choice(["db", *WORKERS, *PROMPTS]))

    def kill(self, name: str) -> None:
        with self.lock:
            process = self.topology.processes.get(name)
            if process is None or process.popen.poll() is not None:
                return
            process.signal(signal.SIGKILL)
        process.wait_closed()
        now = time.monotonic()
        self.faults.append(Fault("kill", name, now, now, process.popen.pid))
        self.report.kills += 1
        if name in WORKERS:
            threading.Timer(self.rng.uniform(1, 3), self.worker, (name,)).start()
        # A prompt is started again by its lane, with the same id.

    def kill_server(self) -> None:
        with self.lock:
            if self.topology.kind == "postgres":
                # Postgres itself; resonator-postgres starts it again on the same files.
                os.kill(self.topology.postmaster(), signal.SIGKILL)
            else:
                self.topology["server"].signal(signal.SIGKILL)
        start = time.monotonic()
        if self.topology.kind != "postgres":
            self.topology["server"].wait_closed()
            time.sleep(self.rng.uniform(0.5, 2))
            with self.lock:
                self.topology.server()
        else:
            self.topology["server"].wait_for("^resonator-postgres: Postgres started again")
        self.faults.append(Fault("kill", "server", start, time.monotonic()))
        self.report.server_kills += 1

    def cut(self, host: str) -> None:
        length = self.rng.uniform(1, 2.5) if self.rng.random() < 0.5 else self.rng.uniform(4, 12)
        start = time.monotonic()
        self.hosts.cut(host)
        time.sleep(length)
        self.hosts.mend(host)
        self.faults.append(Fault("cut", host, start, time.monotonic()))
        self.report.cuts += 1

    # ── After ──

    def drain(self) -> None:
        """Every cable in, and every process running again."""
        for host in ("db", *WORKERS, *PROMPTS):
            self.hosts.mend(host)
        for name in WORKERS:
            if self.topology[name].popen.poll() is not None:
                self.worker(name)

    def sample(self) -> None:
        """The workers' memory, every five seconds, by how long each has lived."""
        while not self.stopping.wait(5):
            for pid, born in list(self.born.items()):
                if kib := rss_kib(pid):
                    self.rss.setdefault(pid, []).append((time.monotonic() - born, kib))

    def check(self) -> None:
        transcript = self.topology.transcript
        assert isinstance(transcript, Timed)
        runs: dict[str, list[tuple[float, str, int]]] = {}  # operator -> (when, who, pid)
        for at, name, pid, line in transcript.timed:
            if WORKERS.get(name) == "ops" and (trace := TRACE.match(line)):
                runs.setdefault(trace["id"], []).append((at, name, pid))
        for id, ran in runs.items():
            for (before, name, pid), (again, _, _) in itertools.pairwise(ran):
                self.report.reruns += 1
                if not self.explained(before, again, name, pid):
                    self.report.unexplained_reruns += 1
                    self.report.details.append(
                        f"{id} ran again {again - before:.1f} s after {name} began it, with no "
                        "kill of it, cut of half a lease or more, or server restart between"
                        + self.nearby(before, again, name)
                    )
        for process in self.topology.history:
            if any("Traceback" in line for line in process.lines):
                self.report.tracebacks += 1
                self.report.details.append(f"a traceback from {process.name}")
        for samples in self.rss.values():
            settled = [kib for age, kib in samples if age >= 30]
            if len(samples) and samples[-1][0] >= 60 and settled:
                growth = samples[-1][1] - settled[0]
                self.report.memory_growth_kib = max(self.report.memory_growth_kib, growth)

    def nearby(self, before: float, again: float, runner: str) -> str:
        """The faults of ``runner`` and of the server, from 20 s before a run until its rerun."""
        said = [
            f"{fault.kind} of {fault.target} from {fault.start - before:+.1f} s "
            f"to {fault.end - before:+.1f} s"
            for fault in self.faults
            if fault.target in (runner, "db", "server")
            and fault.end >= before - 20
            and fault.start <= again
        ]
        return f" (faults near it: {'; '.join(said)})" if said else " (no fault near it)"

    def explained(self, before: float, again: float, runner: str, pid: int) -> bool:
        """Whether a fault between two runs of an operator lapsed the lease of the first."""
        for fault in self.faults:
            if fault.end < before or fault.start > again:
                continue
            if fault.kind == "kill" and fault.target == "server":
                return True
            if fault.kind == "kill" and fault.process == pid:
                return True
            long = fault.end - fault.start >= LEASE / 2
            if fault.kind == "cut" and long and fault.target in (runner, "db"):
                return True
        return False

    def run(self) -> Report:
        self.start()
        sampler = threading.Thread(target=self.sample, daemon=True)
        sampler.start()
        count = [0]
        lanes = [threading.Thread(target=self.lane, args=(name, count)) for name in PROMPTS]
        for lane in lanes:
            lane.start()
        try:
            self.inject()
        finally:
            self.stopping.set()
            self.drain()
            deadline = time.monotonic() + DRAIN
            for lane in lanes:
                lane.join(timeout=max(deadline - time.monotonic(), 0))
            with self.lock:
                self.given_up = True
                for name in PROMPTS:  # what still computes hung: its lane says so
                    if (
                        prompt := self.topology.processes.get(name)
                    ) and prompt.popen.poll() is None:
                        prompt.popen.kill()
            for lane in lanes:
                lane.join()
        self.check()
        return self.report


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def row(report: Report) -> str:
    """The report as a row of the table in docs/reliability.md."""
    kills = f"{report.kills + report.server_kills}"
    if report.server_kills:
        kills += f" ({report.server_kills} of the server)"
    return (
        f"| {report.server} | {report.right}/{report.total} | {report.wrong} | {report.hung} "
        f"| {kills} | {report.cuts} | {report.reruns} | {report.unexplained_reruns} "
        f"| {report.tracebacks} | {report.memory_growth_kib / 1024:.1f} MiB |"
    )


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_argument("--server", choices=sorted(SERVERS), default="stand-in")
    cli.add_argument("--minutes", type=float, default=6.0, help="of faults (default: %(default)s)")
    cli.add_argument("--seed", type=int, default=None, help="for the faults and the expressions")
    cli.add_argument("--out", type=Path, help="where to write the figures as JSON")
    args = cli.parse_args(argv)
    if os.geteuid() != 0:
        cli.exit(
            2, "chaos.py: needs root, to give each process a host of its own (network namespaces)\n"
        )
    if why := missing(SERVERS[args.server]):
        cli.exit(2, f"chaos.py: {why}\n")
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    scratch = Path(tempfile.mkdtemp(prefix="resonator-chaos-"))
    # SIGTERM ends it as Ctrl-C does: through the ``with`` blocks that clean up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        chaos = Chaos(args.server, args.minutes, seed, scratch)
        with chaos.hosts, chaos.topology:
            report = chaos.run()
    except Unavailable as why:
        cli.exit(2, f"chaos.py: {why}\n")
    except KeyboardInterrupt:
        print("chaos.py: stopped; every process and host it made is gone", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        "| server | right | wrong | hung | kills | cuts | operator re-runs "
        "| unexplained | tracebacks | worker memory growth |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(row(report))
    for detail in report.details:
        print(f"  {detail}")
    print(f"seed {seed}", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(asdict(report) | {"seed": seed}, indent=2) + "\n")
    return 1 if report.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
