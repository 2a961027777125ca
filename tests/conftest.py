"""The suite's fixtures and hooks; what the tests share besides is in ``helpers.py``."""

from __future__ import annotations

import re
import signal
from typing import TYPE_CHECKING

import pytest

from resonator.harness.processes import Topology
from tests.helpers import available

if TYPE_CHECKING:
    from collections.abc import Iterator

# A shell that starts a job in the background (`pytest &`, or a script run
# that way) starts it with SIGINT ignored, and every process it starts
# inherits that: their Ctrl-C would do nothing, and the tests that press it
# would fail. A handler, unlike an ignore, is reset to the default by exec,
# so with one here each child gets the SIGINT a terminal would give it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(params=["stand-in", "resonate"])
def server(request: pytest.FixtureRequest) -> str:
    """A test about servers runs on the stand-in and on the real server."""
    return available(request.param)


@pytest.fixture
def topology(server: str) -> Iterator[Topology]:
    """A running server with exp/lhs, exp/rhs and ops; all killed afterwards."""
    with Topology(server) as topology:
        yield topology.standard()


# ── The long-lived check: started with the session, checked at its end ──────

LONG_LIVED = pytest.StashKey[Topology]()
# A test on Postgres: in test_postgres.py, or given "postgres" as its server.
ON_POSTGRES = re.compile(r"test_postgres\.py|[\[.-]postgres[\]-]")
POSTGRES_CHOSEN = pytest.StashKey[bool]()  # some test on Postgres is among those chosen


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the long-lived test last: the minutes it needs pass while the rest runs."""
    late = [item for item in items if item.get_closest_marker("long_lived")]
    items[:] = [item for item in items if item not in late] + late


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the long-lived processes once the tests are chosen, if it is among them."""
    session.config.stash[POSTGRES_CHOSEN] = any(ON_POSTGRES.search(i.nodeid) for i in session.items)
    chosen = any(item.get_closest_marker("long_lived") for item in session.items)
    if chosen and not session.config.option.collectonly:
        topology = Topology(server_args=("-v",))
        session.config.stash[LONG_LIVED] = topology
        topology.standard()
        topology.prompt(name="prompt", stdin=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    if topology := config.stash.get(LONG_LIVED, None):
        topology.__exit__(None, None, None)


@pytest.fixture(scope="session")
def long_lived(pytestconfig: pytest.Config) -> Topology:
    """The article's processes, started when the tests had been chosen."""
    return pytestconfig.stash[LONG_LIVED]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many tests ran on Postgres, if any was chosen: a skip for want of resonate.sql
    is no pass."""
    if not terminalreporter.config.stash.get(POSTGRES_CHOSEN, False):
        return  # said of a run that had none to run, "0 tests ran" reads as a failure
    ran = skipped = 0
    for outcome in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
        for report in terminalreporter.stats.get(outcome, []):
            on_postgres = ON_POSTGRES.search(getattr(report, "nodeid", ""))
            if on_postgres and report.when in ("call", "setup"):
                if outcome == "skipped":
                    skipped += 1
                elif report.when == "call" or outcome == "error":
                    ran += 1
    terminalreporter.write_line(f"Postgres: {ran} tests ran, {skipped} skipped")
