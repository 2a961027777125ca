"""Real processes on loopback, for the tests, the benchmark and the demo.

Each child's output is read line by line as it is printed. Readiness and
progress are awaited as printed lines (``wait_for``), never by sleeping.
Every wait is bounded, and ``Topology`` kills everything it started when its
``with`` block ends, however it ends.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

log = logging.getLogger("resonator.harness.processes")

WAIT = 60.0  # seconds; generous, since CI machines are slow and noisy
TRACE = re.compile(r"^(?P<who>\S+): (?P<what>[-+*=] .*)  \[(?P<id>\S+)\]$")


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def real_server_command() -> str | None:
    """The real server's command line with ``{port}``, if one can be run here."""
    if command := os.environ.get("RESONATE_SERVER_CMD"):
        return command
    if shutil.which("resonate"):
        return "resonate dev --server-port {port} --tasks-retry-timeout 1000"
    return None


class Process:
    """A child process whose output lines are collected as they are printed."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        stdin: bool = False,
        echo: Callable[[Process, str], None] | None = None,
    ) -> None:
        self.name = name
        self.echo = echo  # told of each line as it is printed
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
            if self.echo:
                self.echo(self, line.rstrip("\n"))
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

    def wait_closed(self, timeout: float = WAIT) -> int:
        returncode = self.popen.wait(timeout)
        with self.changed:
            self.changed.wait_for(lambda: self.closed, timeout)
        return returncode

    def signal(self, sig: int) -> None:
        log.info("sending %s to %s", signal.Signals(sig).name, self.name)
        self.popen.send_signal(sig)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(WAIT)

    def traces(self) -> list[re.Match[str]]:
        return [m for line in list(self.lines) if (m := TRACE.match(line))]


def started(worker: Process, group: str, pid: str) -> None:
    worker.wait_for(f"^worker started: group={group} pid={pid}$")


class Topology:
    """A Resonate server and the processes around it, all on loopback."""

    def __init__(
        self,
        real_server: str | None = None,
        server_args: tuple[str, ...] = (),
        postgres: str | None = None,
        echo: Callable[[Process, str], None] | None = None,
        **env: str,
    ) -> None:
        self.real_server = real_server
        self.echo = echo  # told of every line any process prints
        self.server_args = server_args  # more for resonator-devserver or resonator-postgres
        self.postgres = postgres  # resonate.sql: the server is resonator-postgres
        self.scratch: Path | None = None  # the database's files, if any
        self.env = {k: v for k, v in os.environ.items() if k not in ("GRP", "PID", "RESONATE_URL")}
        self.env |= {"PYTHONUNBUFFERED": "1", **env}
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
        process = Process(name, args, environment, stdin, self.echo)
        self.processes[name] = process
        self.history.append(process)
        return process

    def server(self) -> Process:
        """Start the server (on the port it had before, if restarted)."""
        if self.postgres:
            return self._database(self.postgres)
        if self.real_server:
            self.port = self.port or free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            command = shlex.split(self.real_server.format(port=self.port))
            process = self.start("server", command)
            self._await_health(process)
            return process
        port = str(self.port)
        args = ["--port", port, "--tasks-retry-timeout", "1000", *self.server_args]
        process = self.start("server", python("-m", "resonator.servers.devserver", *args))
        self.url = process.wait_for(r"listening on (http://\S+)").group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        return process

    def _database(self, sql: str) -> Process:
        """resonator-postgres, on the files it had before, if restarted."""
        self.port = self.port or free_port()
        if self.scratch is None:
            self.scratch = Path(tempfile.mkdtemp(prefix="resonator-"))
            self.scratch.chmod(0o755)  # Postgres, run as nobody when we are root, must enter
        data = str(self.scratch / "postgres")
        args = ["--port", str(self.port), "--data", data, "--sql", sql, *self.server_args]
        process = self.start("server", python("-m", "resonator.servers.postgres", *args))
        self.url = process.wait_for(r"Resonate on Postgres at (\S+)$").group(1)
        return process

    def postmaster(self) -> int:
        """The pid of the running Postgres (resonator-postgres's child)."""
        assert self.scratch is not None, "no database was started"
        return int((self.scratch / "postgres" / "postmaster.pid").read_text().split()[0])

    def _await_health(self, process: Process) -> None:
        # An outside binary prints no line we know, so ask /health, bounded.
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and process.popen.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"the real server never answered /health at {self.url}")

    def worker(self, group: str, pid: str, wait: bool = True, **env: str) -> Process:
        process = self.start(pid, python("-m", "resonator"), {"GRP": group, "PID": pid, **env})
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
        return subprocess.run(
            python("-m", "resonator", "--url", self.url, *args),
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
