"""The Procfiles' recipes, run as written: every line of each, on a port of its own."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from resonator.harness.processes import Topology, free_port, started
from tests.helpers import ARTICLE, ROOT, available, javascript

if TYPE_CHECKING:
    from pathlib import Path

# Each Procfile, and the server it starts.
PROCFILES = {
    "Procfile": "stand-in",
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
