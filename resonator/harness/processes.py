"""Real processes, for the tests, the benchmark and the demo: on loopback, or on other hosts.

Each child's output is read line by line as it is printed. Readiness and
progress are awaited as printed lines (``wait_for``), never by sleeping.
Every wait is bounded, and ``Topology`` kills everything it started when its
``with`` block ends, however it ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

log = logging.getLogger("resonator.harness.processes")

WAIT = 60.0  # seconds; generous, since CI machines are slow and noisy
TRACE = re.compile(r"^(?P<who>\S+): (?P<what>[-+*=] .*)  \[(?P<id>\S+)\]$")


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it, read from /proc: ``pid`` first."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError):
            continue  # gone since it was listed
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += [child for child, parent in parents.items() if parent == found[-1]]
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# The servers a topology can run on. "resonate" is the real server, in memory
# (``resonate dev``); "resonate-sqlite" the same on a file that outlives it
# (``resonate serve``); "resonate-0.9.8" the released 0.9.8, which refuses
# the ids of resonate-sdk 0.8 (see connections/ids.py).
SERVERS = ("stand-in", "postgres", "resonate", "resonate-sqlite", "resonate-0.9.8")

# The real server's flags here, as in the Procfile and the benchmark (which
# bind it to loopback): no metrics port; work that nobody took is sent again
# after a second (not 30); and messages go out every 10 ms, not every 100 ms,
# which every hop of a computation would otherwise wait (docs/servers.md has
# the figures).
RESONATE_FLAGS = (
    "--observability-metrics-port",
    "0",
    "--tasks-retry-timeout",
    "1000",
    "--messages-poll-interval",
    "10",
)
# Its log: its settings and that it listens, then only what goes wrong; not a
# line for every request (server), connection (transport) or task sent (processing).
RESONATE_LOG = (
    "warn,resonate=info,resonate::server=error,resonate::transport=warn,resonate::processing=warn"
)


def binary(server: str) -> str:
    """The program a real server runs as: ``resonate`` or ``resonate-0.9.8``."""
    return "resonate-0.9.8" if server == "resonate-0.9.8" else "resonate"


def missing(server: str) -> str | None:
    """Why ``server`` cannot run here, or None if it can."""
    if server == "postgres" and not os.environ.get("RESONATE_PG_SQL"):
        return "no resonate.sql: set RESONATE_PG_SQL to its path (docs/postgres.md)"
    if server.startswith("resonate") and not shutil.which(binary(server)):
        return (
            f"no real Resonate server: `{binary(server)}` is not on PATH; put the directory "
            "that holds it on PATH (docs/servers.md says which build works)"
        )
    return None


class Transcript:
    """Every line the processes of a topology print, with who printed it, in the order read."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []  # (the process's name, the line)
        self.changed = threading.Condition()

    def add(self, name: str, line: str) -> None:
        with self.changed:
            self.lines.append((name, line))
            self.changed.notify_all()

    def after(self, seen: int, timeout: float | None = None) -> list[tuple[str, str]]:
        """The lines from index ``seen`` on, once there is one (or none, after ``timeout``)."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.lines) > seen, timeout)
            return self.lines[seen:]


class Process:
    """A child process whose output lines are collected as they are printed."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        stdin: bool = False,
        transcript: Transcript | None = None,
    ) -> None:
        self.name = name
        self.transcript = transcript  # shared with the other processes, if any
        self.popen = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.closed = False
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
            if self.transcript:
                self.transcript.add(self.name, line.rstrip("\n"))
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def wait_for(self, pattern: str, after: int = 0, timeout: float = WAIT) -> re.Match[str]:
        """The first line from index ``after`` on that matches, once printed."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            seen = after
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    why = "exited" if self.closed else f"waited {timeout:.0f}s"
                    raise AssertionError(
                        f"{self.name} {why} without printing {pattern!r}; it printed:\n"
                        + "\n".join(self.lines[-30:])
                    )
                self.changed.wait(remaining)

    def send(self, line: str) -> int:
        """Write a line to the process; returns how many lines it had printed."""
        assert self.popen.stdin is not None
        printed = len(self.lines)
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()
        return printed

    def wait_closed(self, timeout: float | None = WAIT) -> int:
        returncode = self.popen.wait(timeout)
        with self.changed:
            self.changed.wait_for(lambda: self.closed, timeout)
        return returncode

    def signal(self, sig: int) -> None:
        log.info("sending %s to %s", signal.Signals(sig).name, self.name)
        self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL to the process and to every process under it, which would outlive it
        otherwise: a shell's command, a worker under ./respawn."""
        if self.popen.poll() is None:
            for pid in descendants(self.popen.pid):  # the process first: nothing respawns
                with contextlib.suppress(OSError):  # gone already, or not ours to kill
                    os.kill(pid, signal.SIGKILL)
        self.popen.wait(WAIT)

    def traces(self) -> list[re.Match[str]]:
        return [m for line in list(self.lines) if (m := TRACE.match(line))]


def started(worker: Process, group: str, pid: str) -> None:
    worker.wait_for(rf"^worker started: group={group} pid={pid} \(process \d+\)$")


class Topology:
    """A Resonate server and the processes around it: on loopback, or where ``where`` says."""

    def __init__(
        self,
        server: str = "stand-in",
        server_args: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        assert server in SERVERS, server
        self.kind = server  # one of SERVERS
        self.transcript = Transcript()  # every line of every process
        self.server_args = server_args  # more arguments for the server
        # The address the server listens on: loopback, or a host's (``hosts.py``),
        # which takes a token (the stand-in) or a password (Postgres).
        self.host = "127.0.0.1"
        self.scratch: Path | None = None  # the server's files, if it keeps any
        self.env = {k: v for k, v in os.environ.items() if k not in ("GRP", "PID", "RESONATE_URL")}
        self.env |= {"PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "RUST_LOG": RESONATE_LOG, **env}
        # The command prefix that runs a process of that name on another host
        # (the tests' ``hosts.py``); a name not in it runs here.
        self.where: dict[str, list[str]] = {}
        # The command a worker of that pid runs instead of Resonator: a program
        # that reads the same environment and says ``worker started`` as
        # Resonator does (``ts/ops.mjs``, the ops worker in JavaScript).
        self.programs: dict[str, list[str]] = {}
        self.processes: dict[str, Process] = {}  # the latest of each name
        self.history: list[Process] = []  # every one ever started
        self.port = 0
        self.url = ""
        self.started = time.monotonic()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for process in self.history:
            process.kill()
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def start(
        self, name: str, args: list[str], env: dict[str, str] | None = None, stdin: bool = False
    ) -> Process:
        if (old := self.processes.get(name)) and old.popen.poll() is None:
            raise AssertionError(f"{name} is still running")
        environment = self.env | {"RESONATE_URL": self.url} | (env or {})
        prefix = self.where.get(name, [])
        process = Process(name, [*prefix, *args], environment, stdin, self.transcript)
        self.processes[name] = process
        self.history.append(process)
        return process

    def server(self) -> Process:
        """Start the server (on the port and files it had before, if restarted)."""
        if self.kind == "stand-in":
            args = ["--host", self.host, "--port", str(self.port), "--tasks-retry-timeout", "1000"]
            process = self.start(
                "server", python("-m", "resonator.servers.devserver", *args, *self.server_args)
            )
            self.url = process.wait_for(r"listening on (http://\S+)").group(1)
            self.port = int(self.url.rsplit(":", 1)[1])
            return process
        self.port = self.port or free_port()
        if self.kind == "postgres":
            data = str(self.files() / "postgres")
            sql = os.environ["RESONATE_PG_SQL"]
            args = ["--port", str(self.port), "--data", data, "--sql", sql, *self.server_args]
            args += ["--host", self.host] if self.host != "127.0.0.1" else []
            process = self.start("server", python("-m", "resonator.servers.postgres", *args))
            self.url = process.wait_for(r"Resonate on Postgres at (\S+)$").group(1)
            return process
        command = [binary(self.kind), "dev"]
        if self.kind == "resonate-sqlite":
            command = [binary(self.kind), "serve", "--storage-type", "sqlite"]
            command += ["--storage-sqlite-path", str(self.files() / "resonate.db")]
        command += ["--server-bind", self.host, "--server-port", str(self.port)]
        command += [*RESONATE_FLAGS, *self.server_args]
        process = self.start("server", command)
        process.wait_for(r"Server listening ")
        self.url = f"http://{self.host}:{self.port}"
        return process

    def files(self) -> Path:
        """A directory for the server's files, kept across its restarts, removed at the end."""
        if self.scratch is None:
            self.scratch = Path(tempfile.mkdtemp(prefix="resonator-"))
            self.scratch.chmod(0o755)  # Postgres, run as nobody when we are root, must enter
        return self.scratch

    def postmaster(self) -> int:
        """The pid of the running Postgres (resonator-postgres's child)."""
        assert self.scratch is not None, "no database was started"
        return int((self.scratch / "postgres" / "postmaster.pid").read_text().split()[0])

    def worker(self, group: str, pid: str, wait: bool = True, **env: str) -> Process:
        program = self.programs.get(pid, python("-m", "resonator"))
        process = self.start(pid, program, {"GRP": group, "PID": pid, **env})
        if wait:
            started(process, group, pid)
        return process

    def standard(self) -> Self:
        """The article's setup: a server, exp/lhs, exp/rhs and one ops worker."""
        self.server()
        # All three start at once; then each is awaited.
        workers = [("exp", "lhs"), ("exp", "rhs"), ("ops", "ops")]
        processes = [self.worker(group, pid, wait=False) for group, pid in workers]
        for process, (group, pid) in zip(processes, workers, strict=True):
            started(process, group, pid)
        return self

    def prompt(self, *args: str, name: str = "prompt", stdin: bool = False, **env: str) -> Process:
        """``resonator --url URL ARGS``, running; see ``calculate`` to wait for it."""
        command = python("-m", "resonator", "--url", self.url, *args)
        return self.start(name, command, env, stdin)

    def calculate(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``resonator --url URL ARGS``, run to its end (where ``where`` puts "calculate")."""
        prefix = self.where.get("calculate", [])
        return subprocess.run(
            [*prefix, *python("-m", "resonator", "--url", self.url, *args)],
            env=self.env | env,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )

    def traces(self, *names: str) -> list[re.Match[str]]:
        """Trace lines of every process, past or present, with one of these names."""
        return [t for p in self.history if p.name in names for t in p.traces()]

    def __getitem__(self, name: str) -> Process:
        return self.processes[name]
