"""Batches: expressions given or piped in, several computed at once, reported in order."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from typing import TYPE_CHECKING

from hypothesis import given, settings
from hypothesis import strategies as st
from resonate.resonate import DEFAULT_TTL

from resonator.client.calculator import Calculator
from resonator.harness.processes import TRACE, WAIT
from resonator.parser import render
from resonator.resonator import EXP, connect
from resonator.terminal.batch import Batch, Report
from resonator.trace import Tracer
from tests.helpers import expressions, oracle

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from resonator.parser import Expr


def resonator(*args: str, stdin: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``resonator --local ARGS``, stderr merged into stdout in the order things were said."""
    return subprocess.run(
        [sys.executable, "-m", "resonator", "--local", *args],
        input=stdin,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=WAIT,
        check=False,
    )


def test_values_come_in_input_order_and_errors_in_their_place() -> None:
    lines = ["(1 + 2) * (3 - 4)", "1 +", "", "2 * 3", "x", "8 - 3 - 2"]
    done = subprocess.run(
        [sys.executable, "-m", "resonator", "--local", "--jobs", "4"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, "-3\n6\n3\n")
    errors = [line for line in done.stderr.splitlines() if "syntax error" in line]
    assert errors == [
        "line 2: syntax error: expected a number or '(' at the end",
        "line 5: syntax error: unexpected character 'x': expected a number or '('",
    ]


def operators_before_the_first_value(jobs: int) -> int:
    """Operator steps begun before the first value is printed, eight slow expressions piped."""
    stdin = "".join(f"{i} + {i}\n" for i in range(8))
    done = resonator("-v", "--jobs", str(jobs), stdin=stdin, RESONATOR_OP_DELAY="0.5")
    lines = done.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.lstrip("-").isdigit())
    values = [line for line in lines if line.lstrip("-").isdigit()]
    assert values == [str(2 * i) for i in range(8)]
    return sum(1 for line in lines[:first] if (t := TRACE.match(line)) and t["what"][0] == "+")


def test_jobs_run_at_once_up_to_their_number() -> None:
    # Each operator takes half a second: what begins before the first value
    # is printed was under way at the same time as it.
    assert operators_before_the_first_value(jobs=1) == 1
    assert operators_before_the_first_value(jobs=4) == 4


@settings(max_examples=5, deadline=None)
@given(st.lists(expressions, min_size=1, max_size=30), st.integers(min_value=1, max_value=16))
def test_any_number_of_jobs_gives_python_s_values_in_order(exprs: list[Expr], jobs: int) -> None:
    texts = [render(expr) for expr in exprs]
    done = resonator("--jobs", str(jobs), stdin="".join(f"{text}\n" for text in texts))
    assert done.returncode == 0, done.stdout
    values = [line for line in done.stdout.splitlines() if line.lstrip("-").isdigit()]
    assert values == [str(oracle(text)) for text in texts]


class Counted(Batch):
    """A batch that notes, each time a line is taken, how far ahead of its reports it reads."""

    def __init__(self, client: Calculator, args: argparse.Namespace) -> None:
        super().__init__(client, args)
        self.reported = 0
        self.ahead: list[int] = []
        self.enough = asyncio.Event()  # 200 reported

    def report(self, result: Report) -> None:
        self.reported += 1
        if self.reported == 200:
            self.enough.set()

    async def lines(self, count: int) -> AsyncIterator[tuple[int, str | None]]:
        for number in range(1, count + 1):
            self.ahead.append(number - self.reported)
            yield number, "1 + 1"


def test_a_long_input_is_read_only_as_fast_as_there_is_room() -> None:
    jobs = 8

    async def scenario() -> Counted:
        tracer = Tracer("test", op_delay=0.01)
        resonate, connection = connect(None, "prompt", "test", DEFAULT_TTL, tracer)
        args = argparse.Namespace(expressions=[], id=None, watch=False, tree=False, jobs=jobs)
        async with Calculator(resonate.options(target=EXP), connection) as client:
            batch = Counted(client, args)
            reporting = asyncio.ensure_future(batch.report_all(batch.lines(100_000)))
            await batch.enough.wait()
            reporting.cancel()
        return batch

    batch = asyncio.run(scenario())
    # A line is taken only once there is room for it: never more than the
    # jobs in flight, and the one line waiting for room, ahead of the reports.
    assert max(batch.ahead) == jobs + 1
    assert len(batch.ahead) <= batch.reported + jobs + 1
