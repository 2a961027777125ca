"""The Procfiles' recipes, run as written: every line of each, on a port of its own.

And under honcho itself, as the README says to: a worker killed mid-computation
takes nothing else down, and the answer arrives once it is back.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from resonator.harness.processes import (
    RESONATE_LOG,
    WAIT,
    Topology,
    free_port,
    python,
    started,
)
from tests.helpers import ARTICLE, ROOT, available, javascript, kill

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from resonator.harness.processes import Process

# Each Procfile, and the server it starts.
PROCFILES = {
    "Procfile": "stand-in",
    "Procfile.polyglot": "stand-in",
    "Procfile.resonate": "resonate",
    "Procfile.postgres": "postgres",
}
# What the server says once it listens, in each.
LISTENING = {
    "Procfile": r"resonator-devserver listening on http://",
    "Procfile.polyglot": r"resonator-devserver listening on http://",
    "Procfile.resonate": r" Server listening ",
    "Procfile.postgres": r"^resonator-postgres: Resonate on Postgres at ",
}


def recipe(procfile: str) -> dict[str, str]:
    """The Procfile's processes: name -> command."""
    found = {}
    for line in (ROOT / procfile).read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, command = line.partition(": ")
            found[name] = command
    return found


def on_its_own(procfile: str, name: str, command: str, port: int, files: Path) -> str:
    """``command`` as the test runs it: on a free port, and on Postgres in files of its own."""
    if procfile == "Procfile.postgres":
        extra = f" --port {port} --data {files / 'postgres'}" if name == "database" else ""
        return command.replace("5433", str(port)) + extra
    if name == "server":
        flag = "--server-port" if procfile == "Procfile.resonate" else "--port"
        return f"{command} {flag} {port}"
    return command


@pytest.mark.parametrize("procfile", sorted(PROCFILES))
def test_each_procfile_starts_a_topology_that_computes(procfile: str) -> None:
    if procfile == "Procfile.polyglot":
        javascript()  # which npm ci brought, or the reason it is not here
    with Topology(available(PROCFILES[procfile])) as topology:
        port = free_port()
        # What the workers are told (on Postgres, their lines name the database).
        topology.url = f"http://127.0.0.1:{port}"
        for name, command in recipe(procfile).items():
            run = on_its_own(procfile, name, command, port, topology.files())
            process = topology.start(name, ["sh", "-c", run])
            if name in ("server", "database"):
                process.wait_for(LISTENING[procfile])
        for name in ("lhs", "rhs", "ops"):
            pid = re.search(r"PID=(\w+)", recipe(procfile)[name])
            started(topology[name], "exp" if pid else "ops", pid.group(1) if pid else r"\w+")
        if procfile == "Procfile.postgres":
            topology.url = f"postgresql://postgres@127.0.0.1:{port}/resonate"
        done = topology.calculate(ARTICLE)
        assert (done.returncode, done.stdout) == (0, "-3\n"), done.stderr


def test_the_real_servers_line_logs_its_start_and_then_only_what_goes_wrong() -> None:
    line = recipe("Procfile.resonate")["server"]
    setting = re.match(r"RUST_LOG=(\S+) ", line)
    assert setting, line
    # docs/servers.md shows the same line, and the tests start it so.
    assert f"RUST_LOG={setting.group(1)} resonate dev" in (ROOT / "docs" / "servers.md").read_text()
    assert setting.group(1) == RESONATE_LOG
    with Topology(available("resonate")) as topology:
        port = free_port()
        topology.url = f"http://127.0.0.1:{port}"
        server = topology.start(
            "server",
            ["sh", "-c", on_its_own("Procfile.resonate", "server", line, port, topology.files())],
        )
        listening = server.wait_for(LISTENING["Procfile.resonate"])
        for group, pid in (("exp", "lhs"), ("exp", "rhs"), ("ops", "ops")):
            topology.worker(group, pid)
        done = topology.calculate(ARTICLE)
        assert (done.returncode, done.stdout) == (0, "-3\n"), done.stderr
        start = server.lines.index(listening.string)
        plain = [re.sub(r"\x1b\[[0-9;]*m", "", said) for said in server.lines]
        assert len(plain[:start]) == 6, plain  # its settings, before it listens
        # Nothing went wrong, so nothing more: not a line for each connection,
        # task or request, nor a warning for the 404 a new computation's id gets.
        assert plain[start + 1 :] == []
        # A worker away, and work for it: that is said.
        kill(topology["rhs"])
        topology.prompt(ARTICLE)
        server.wait_for(r" WARN .*Poll send failed: .* group=exp target_id=rhs$")
        plain = [re.sub(r"\x1b\[[0-9;]*m", "", said) for said in server.lines]
        told = [said for said in plain[start + 1 :] if not re.search(r" WARN ", said)]
        assert told == [], told


UNDER_HONCHO = re.compile(r"^((?:\w+=\S+ )+)uv run honcho start$", re.MULTILINE)
# What honcho prints of a process it started: "12:00:00 lhs.1    | the line".
SAID = r"^\S+ {name}\.1 +\| "


@contextlib.contextmanager
def honcho(topology: Topology, procfile: Path, env: dict[str, str]) -> Iterator[Process]:
    """``honcho -f procfile start`` in the project's root, stopped at the end, however it ends.

    Honcho starts each process in a session of its own, so killing honcho
    would leave them running: it is stopped as Ctrl-C stops it, and then
    each process group it said it started is killed, in case one outlived it.
    """
    command = python("-m", "honcho", "-f", str(procfile), "-d", str(ROOT), "--no-colour", "start")
    process = topology.start("honcho", command, env)
    try:
        yield process
    finally:
        process.signal(signal.SIGINT)
        with contextlib.suppress(Exception):
            process.wait_closed()
        for group in re.findall(r"\| \S+ started \(pid=(\d+)\)$", "\n".join(process.lines), re.M):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(group), signal.SIGKILL)


def runnable(procfile: str) -> str | None:
    """Why ``procfile`` cannot run here (its server, or Node), or None if it can."""
    try:
        available(PROCFILES[procfile])
        if procfile == "Procfile.polyglot":
            javascript()  # which npm ci brought, or the reason it is not here (in CI: a failure)
    except pytest.skip.Exception as why:
        return f"{procfile}: {why}"
    return None


# Each Procfile under its own honcho, all at once: each run is mostly waiting (steps of
# 3 s, a lease of 5 s), and one after another they took 26 s each.
@pytest.mark.parametrize("procfiles", [sorted(PROCFILES)], ids=["-".join(sorted(PROCFILES))])
def test_a_worker_killed_under_honcho_comes_back_and_the_answer_arrives(
    procfiles: list[str],
) -> None:
    readme = UNDER_HONCHO.search((ROOT / "README.md").read_text())
    assert readme, "the README says how to start honcho for a crash"
    env = dict(setting.split("=") for setting in readme.group(1).split())
    reasons = {procfile: runnable(procfile) for procfile in procfiles}
    with ThreadPoolExecutor(len(procfiles)) as pool:
        runs = {
            procfile: pool.submit(crash_under_honcho, procfile, env)
            for procfile, why in reasons.items()
            if why is None
        }
    failures = []
    for procfile, run in runs.items():
        try:
            run.result()
        except Exception as error:
            failures.append(f"{procfile}: {type(error).__name__}: {error}")
    assert not failures, "\n\n".join(failures)
    if skipped := [why for why in reasons.values() if why]:
        pytest.skip(f"{', '.join(runs)} passed; not here: {'; '.join(skipped)}")


def crash_under_honcho(procfile: str, env: dict[str, str]) -> None:
    """``lhs`` killed by SIGKILL mid-step under honcho running ``procfile``, as the README says."""
    with Topology(PROCFILES[procfile]) as topology:
        port = free_port()
        topology.url = f"http://127.0.0.1:{port}"
        lines = [
            f"{name}: {on_its_own(procfile, name, command, port, topology.files())}"
            for name, command in recipe(procfile).items()
        ]
        copy = topology.files() / procfile
        copy.write_text("\n".join(lines) + "\n")
        with honcho(topology, copy, env) as run:
            said = {name: SAID.format(name=name) for name in ("lhs", "rhs", "ops")}
            for prefix in said.values():
                run.wait_for(prefix + r"worker started: ", timeout=2 * WAIT)
            lhs = run.wait_for(said["lhs"] + r"worker started: .* \(process (\d+)\)$")
            if procfile == "Procfile.postgres":
                topology.url = f"postgresql://postgres@127.0.0.1:{port}/resonate"
            prompt = topology.prompt("--id", "crash", ARTICLE)
            run.wait_for(said["lhs"] + r"exp/lhs: = 1 \+ 2  \[crash:1\]$")
            os.kill(int(lhs.group(1)), signal.SIGKILL)
            killed = run.wait_for(said["lhs"] + r"respawn: (.*)$").group(1)
            assert killed == "resonator was killed by SIGKILL; starting it again"
            # Steps take 3 s each, and the dead one's lease 5 s to lapse.
            assert prompt.wait_closed(timeout=4 * WAIT) == 0, prompt.lines
            assert prompt.lines[-1] == "-3", prompt.lines
            stopped = [line for line in run.lines if re.search(r" system +\| .* stopped ", line)]
            assert not stopped, "\n".join(run.lines)
            stopping = len(run.lines)
            run.signal(signal.SIGINT)  # Ctrl-C: everything stops, cleanly
            assert run.wait_closed() == 130
            for prefix in said.values():
                run.wait_for(prefix + r"worker stopped: ", after=stopping)


def test_a_worker_under_respawn_stops_with_it() -> None:
    # A SIGTERM to ./respawn (a service manager's stop, or honcho's to one process) is
    # its worker's clean stop too: it never leaves the worker running on its own.
    with Topology("stand-in") as topology:
        topology.server()
        env = {"GRP": "ops", "PID": "ops"}
        respawn = topology.start("ops", [str(ROOT / "respawn"), *python("-m", "resonator")], env)
        line = respawn.wait_for(r"^worker started: group=ops pid=ops \(process (\d+)\)$")
        respawn.signal(signal.SIGTERM)
        assert respawn.wait_closed() == 0, respawn.lines
        assert respawn.lines[-1].startswith("worker stopped: "), respawn.lines
        with pytest.raises(ProcessLookupError):
            os.kill(int(line.group(1)), 0)  # the worker has ended, and respawn reaped it
