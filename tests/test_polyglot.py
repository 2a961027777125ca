"""The ops worker in JavaScript (``ts/ops.mjs``) beside the Python exp workers.

On the stand-in and on the real server, with ``ts/ops.mjs`` the only ops
worker: the article's expression, its crash mid-operation, numbers past
JavaScript's safe integers, and a value it refuses. They need Node 22 and
the TypeScript SDK, as ``npm ci`` in ts/ installs them (``.ci/run`` does):
without them they skip, saying so, except in CI, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest
from resonate.error import ApplicationError
from resonate.resonate import DEFAULT_TTL

from resonator.harness.processes import TRACE, WAIT, Topology, free_port, started
from resonator.resonator import EXP, connect
from resonator.trace import Tracer
from tests.helpers import ARTICLE, ROOT, VALUE, javascript, kill, operator_runs, oracle

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from resonator.harness.processes import Process

# Past 2**53 as operands, as a result of operands that are not, negative,
# and long enough for the trace to shorten.
BIG = [
    "12345678901234567890 + 1",
    "9007199254740993 - 0",
    "4503599627370496 * 2 + 1",
    "-9007199254740993 * 3",
    "(99999999999 * 99999999999) * 99999999999",
    "123456789012345678901234567890123456789 * 987654321098765432109876543210987654321",
]


@pytest.fixture
def mixed(server: str) -> Iterator[Topology]:
    """A topology on ``server`` with two-second leases, started by ``polyglot``; killed after."""
    with Topology(server, RESONATOR_TTL="2") as topology:
        yield topology


def polyglot(topology: Topology, op_delay: str = "0") -> Process:
    """Start the server, exp/lhs and exp/rhs in Python, and ops/js in JavaScript."""
    topology.server()
    topology.worker("exp", "lhs")
    topology.worker("exp", "rhs")
    topology.programs["js"] = javascript()
    return topology.worker("ops", "js", RESONATOR_OP_DELAY=op_delay)


def test_the_article_with_javascript_computing_every_operator(mixed: Topology) -> None:
    ops = polyglot(mixed)
    done = mixed.calculate("--id", "a", ARTICLE)
    assert (done.returncode, done.stdout) == (0, "-3\n"), done.stderr
    ran = sorted((t["id"], t["what"]) for t in ops.traces())
    assert ran == [("a:1.3", "+ 1 2"), ("a:2.3", "- 3 4"), ("a:3", "* 3 -1")]


def test_the_javascript_worker_started_before_its_server_says_what_the_python_ones_say(
    mixed: Topology,
) -> None:
    mixed.port = free_port()
    mixed.url = f"http://127.0.0.1:{mixed.port}"
    mixed.programs["js"] = javascript()
    ops = mixed.worker("ops", "js", wait=False)
    ops.wait_for("^waiting for the Resonate server at ")
    mixed.server()
    mixed.worker("exp", "lhs")
    mixed.worker("exp", "rhs")
    started(ops, "ops", "js")
    done = mixed.calculate(ARTICLE)
    assert (done.returncode, done.stdout) == (0, "-3\n"), done.stderr
    said = [line for line in ops.lines if not TRACE.match(line)]
    waited = [f"waiting for the Resonate server at {mixed.url}", f"connected to {mixed.url}"]
    assert said[:2] == waited, said
    assert re.fullmatch(r"worker started: group=ops pid=js \(process \d+\)", said[2]), said
    assert len(said) == 3, said
    # Once per outage, that it cannot reach it; and that it is back.
    kill(mixed["server"])
    gone = ops.wait_for(f"^cannot reach the Resonate server at {mixed.url}; retrying$")
    before = len(ops.lines)
    mixed.server()
    ops.wait_for(f"^connected to {mixed.url}$", after=before)
    assert ops.lines.count(gone.group(0)) == 1, ops.lines


def test_the_javascript_worker_killed_mid_operation_and_started_again(mixed: Topology) -> None:
    ops = polyglot(mixed, op_delay="1")
    prompt = mixed.prompt("--id", "k", ARTICLE)
    ops.wait_for(r"^ops/js: \+ 1 2  \[k:1\.3\]$")
    kill(ops)
    unsettled = set(operator_runs(mixed, "js"))  # what it had started
    mixed.worker("ops", "js", RESONATOR_OP_DELAY="1")  # ts/ops.mjs again
    assert prompt.wait_for(VALUE).group(0) == "-3"
    runs = operator_runs(mixed, "js")
    assert set(runs) == {"k:1.3", "k:2.3", "k:3"}
    # The operation it died in ran again on the worker started again, and
    # nothing ran again that had not started on the one killed.
    assert runs["k:1.3"] == 2
    assert {id for id, n in runs.items() if n == 2} <= unsettled
    assert max(runs.values()) == 2


def test_numbers_past_javascripts_safe_integers_are_exact(mixed: Topology) -> None:
    polyglot(mixed)
    done = mixed.calculate(*BIG)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(oracle(text)) for text in BIG]


def test_what_is_not_an_integer_is_refused_once_in_a_line(mixed: Topology) -> None:
    ops = polyglot(mixed)

    async def refusal() -> str:
        # No text parses to 1.5, so the tree is given as the prompt would have sent it.
        resonate, _ = connect(mixed.url, "prompt", "refused", DEFAULT_TTL, Tracer("test"))
        resonate.start()
        try:
            await resonate.options(target=EXP).run("r", "=", ("+", 1.5, 2)).result()
        except ApplicationError as error:
            return str(error)
        finally:
            await resonate.stop()
        raise AssertionError("1.5 + 2 was computed")

    said = asyncio.run(refusal())
    assert "1.5" in said and "not an integer" in said and "\n" not in said, said
    assert operator_runs(mixed, "js") == {"r:3": 1}
    assert ops.popen.poll() is None  # and it goes on serving
    done = mixed.calculate("1 + 2")
    assert done.stdout == "3\n", done.stderr


def test_what_npm_ci_warns_of_here_is_explained_where_it_says_to_run_it(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        why = "no npm: install it to run `npm ci` in ts/"
        if os.environ.get("CI"):
            pytest.fail(f"{why} (.ci/run does)")
        pytest.skip(why)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(ROOT / "ts" / name, tmp_path / name)
    # What `npm ci --prefix ts` prints, on the Node that runs npm here (Debian's 20, say),
    # without installing anything.
    done = subprocess.run(
        [npm, "ci", "--prefix", str(tmp_path), "--dry-run", "--offline"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    warned = re.findall(r"^npm warn (\w+) (.*)$", done.stderr + done.stdout, re.MULTILINE)
    # Each warning is named in docs/polyglot.md, where it says why it does no harm.
    docs = (ROOT / "docs" / "polyglot.md").read_text()
    assert [(code, said) for code, said in warned if code not in docs] == []
