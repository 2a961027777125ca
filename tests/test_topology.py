"""The article's topology as real processes: a server, two exp workers, ops."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import pytest

from resonator.harness.processes import Topology, python
from resonator.parser import Expr, parse, render
from tests.helpers import oracle

if TYPE_CHECKING:
    from collections.abc import Iterator

DEEP = "((1 + 2) * (3 - 4)) - ((5 * 6) + (7 - -8)) * 2"


def value(expr: Expr) -> int:
    return oracle(render(expr))


def expected_steps(expr: Expr, id: str) -> Iterator[tuple[str, str, str]]:
    """Where each step of ``expr`` must run: (worker, what, promise id)."""
    match expr:
        case (op, lhs, rhs):
            sep = "." if ":" in id else ":"
            yield "exp/lhs", f"= {render(lhs)}", f"{id}{sep}1"
            yield "exp/rhs", f"= {render(rhs)}", f"{id}{sep}2"
            yield "ops", f"{op} {value(lhs)} {value(rhs)}", f"{id}{sep}3"
            yield from expected_steps(lhs, f"{id}{sep}1")
            yield from expected_steps(rhs, f"{id}{sep}2")


def steps_run(topology: Topology) -> set[tuple[str, str, str]]:
    """What the workers say they ran below the roots, ``ops/<pid>`` shortened to ``ops``."""
    return {
        (
            trace["who"].split("/")[0] if trace["who"].startswith("ops/") else trace["who"],
            trace["what"],
            trace["id"],
        )
        for trace in topology.traces("lhs", "rhs", "ops")
        if ":" in trace["id"]
    }


@pytest.mark.parametrize("server", ["stand-in", "postgres", "resonate"], indirect=True)
def test_left_operands_run_on_lhs_right_on_rhs_operators_on_ops(topology: Topology) -> None:
    texts = ["(1 + 2) * (3 - 4)", "1 + 2 * 3", "8 - 3 - 2", DEEP]
    for i, text in enumerate(texts):
        done = topology.calculate("--id", f"article-{i}", text)
        assert (done.returncode, done.stdout) == (0, f"{value(parse(text))}\n"), done.stderr
        assert done.stderr == f"connected to {topology.url}\n"
    expected = {
        step for i, t in enumerate(texts) for step in expected_steps(parse(t), f"article-{i}")
    }
    # Replays of "=" repeat lines, so compare as sets: nothing missing, nothing misplaced.
    assert steps_run(topology) == expected
    # A root runs first in the prompt; its replays are any exp worker's.
    roots = {t["who"] for t in topology.traces("lhs", "rhs", "ops") if ":" not in t["id"]}
    assert roots <= {"exp/lhs", "exp/rhs"}


def test_two_prompts_at_once(topology: Topology) -> None:
    first = topology.prompt(DEEP, name="first")
    second = topology.prompt("(2 * 3) * (4 - 5) + 6", name="second")
    assert first.wait_for(r"^-?\d+$").group(0) == str(value(parse(DEEP)))
    assert second.wait_for(r"^-?\d+$").group(0) == "0"
    assert (first.wait_closed(), second.wait_closed()) == (0, 0)


def test_piped_lines_through_the_server(topology: Topology) -> None:
    process = topology.start(
        "piped",
        ["sh", "-c", f"printf '1 + 1\\n(2\\n3 * 3\\n' | {' '.join(python('-m', 'resonator'))}"],
    )
    assert process.wait_closed() == 1
    assert [line for line in process.lines if line.lstrip("-").isdigit()] == ["2", "9"]
    assert "line 2: syntax error: '(' is never closed" in process.lines


def test_the_same_id_runs_nothing_again(topology: Topology) -> None:
    first = topology.calculate("--id", "again", "(1 + 2) * 3")
    assert first.stdout == "9\n"
    ran = {name: len(topology[name].lines) for name in ("lhs", "rhs", "ops")}
    second = topology.calculate("--id", "again", "(1 + 2) * 3")
    assert second.stdout == "9\n"
    assert {name: len(topology[name].lines) for name in ran} == ran
    other = topology.calculate("--id", "again", "2 + 2")
    assert other.returncode == 1
    assert other.stderr.splitlines()[-1] == (
        "error: id again already names another expression: (1 + 2) * 3"
    )


def test_a_reused_id_of_another_expression_is_refused_before_anything_is_computed() -> None:
    with Topology() as topology:
        topology.server()
        topology.worker("exp", "lhs")
        topology.worker("exp", "rhs")
        topology.worker("ops", "ops", RESONATOR_OP_DELAY="30")
        first = topology.prompt("--id", "clash", "(1 + 2) * 3")
        topology["ops"].wait_for(r"^ops/ops: \+ 1 2  \[clash:1\.3\]$")  # and 30 s to go
        other = topology.calculate("--id", "clash", "2 + 2")
        assert (other.returncode, other.stdout) == (1, "")
        assert other.stderr.splitlines()[-1] == (
            "error: id clash already names another expression: (1 + 2) * 3"
        )
        # Refused at once: the first is still computing, and nothing of 2 + 2 ran.
        assert first.popen.poll() is None
        assert [t["what"] for t in topology.traces("ops")] == ["+ 1 2"]


def test_workers_stop_cleanly_on_ctrl_c_and_sigterm(topology: Topology) -> None:
    topology["lhs"].signal(signal.SIGINT)
    topology["ops"].signal(signal.SIGTERM)
    for name in ("lhs", "ops"):
        assert topology[name].wait_closed() == 0
        assert topology[name].lines[-1].startswith("worker stopped:")
        assert not any("Traceback" in line for line in topology[name].lines)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_stand_in_stops_cleanly(sig: signal.Signals) -> None:
    with Topology() as topology:
        server = topology.server()
        server.signal(sig)
        assert server.wait_closed() == 0
        assert not any("Traceback" in line for line in server.lines)


def test_ctrl_c_while_a_run_waits_is_one_line_and_no_noise(topology: Topology) -> None:
    topology["lhs"].signal(signal.SIGKILL)  # so that the computation waits
    topology["lhs"].wait_closed()
    prompt = topology.prompt("--id", "waiting", "(1 + 2) * (3 - 4)")
    topology["rhs"].wait_for(r"\[waiting:2\]$")
    prompt.signal(signal.SIGINT)
    assert prompt.wait_closed() == 130
    assert prompt.lines == [
        f"connected to {topology.url}",
        "",
        "stopped waiting; the computation goes on as waiting",
    ]
