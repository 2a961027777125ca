"""The suite's own hooks (conftest.py), run as pytest runs them: in a pytest of their own."""

from __future__ import annotations

import os
import subprocess
import sys

from resonator.harness.processes import WAIT
from tests.helpers import ROOT


def pytest_says(*args: str) -> list[str]:
    """The lines a pytest run of ``args`` prints, without resonate.sql (its tests skip)."""
    env = {k: v for k, v in os.environ.items() if k != "RESONATE_PG_SQL"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def test_a_run_without_tests_on_postgres_says_nothing_of_postgres() -> None:
    said = pytest_says("tests/test_parser.py", "-k", "test_grammar")
    assert [line for line in said if "Postgres" in line] == []


def test_a_run_with_tests_on_postgres_says_how_many_ran_and_how_many_skipped() -> None:
    said = pytest_says("tests/test_postgres.py", "-k", "test_old_computations_are_forgotten")
    assert "Postgres: 0 tests ran, 1 skipped" in said
