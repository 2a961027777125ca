"""The benchmark is a tool, not a test: this only checks that it runs and reports."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import TYPE_CHECKING

import pytest

from bench import bench, peers
from bench.driver import Driver, balanced

if TYPE_CHECKING:
    from pathlib import Path


def test_a_tiny_run_reports_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    tiny = ["--quick", "--depths", "1", "--chain", "2", "--runs", "3"]
    more = ["--history", "0,12", "--batch", "3,6", "--piped", "4", "--pool", "1,2"]
    more += ["--pool-depth", "2"]
    assert bench.main([*tiny, *more, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["modes"]) == bench.modes()
    assert {"embedded", "standin"} <= set(report["modes"])
    for mode, figures in report["modes"].items():
        assert figures["durable_per_step"] is (mode == "postgres")
        assert figures["requests_per_operator"] > 4
        assert figures["throughput_16_per_s"] > 0
    assert [row["workload"] for row in report["workloads"]] == ["balanced depth 1", "chain of 2"]
    for row in report["workloads"]:
        assert row["promises"] == 3 * row["operators"] + 1
        for mode in report["modes"]:
            assert 0 < row[f"{mode}_p50_ms"] <= row[f"{mode}_p95_ms"]
    assert set(report["batch_jobs"]) == set(report["modes"])
    for seconds in report["batch_jobs"].values():
        assert set(seconds) == {"1", "16"}
    assert set(report["throughput_per_s"]) == {"1", "4"}
    assert report["protocol"]["requests_per_operator"] > 4
    assert set(report["batch_seconds"]) == {"3", "6"}
    for runs in report["history"].values():
        assert list(runs) == list(report["modes"])
        for mode, run in runs.items():
            assert [point["after"] for point in run["points"]] == [0, 12]
            if mode != "resonate":  # which does not say how many it holds
                assert run["points"][1]["promises"] > run["points"][0]["promises"]
    # The pool on each server: every operator ran, by one worker or the other.
    assert list(report["pool"]) == list(report["modes"])[1:]
    for run in report["pool"].values():
        assert [row["workers"] for row in run["rows"]] == [1, 2]
        for row in run["rows"]:
            assert sum(row["operators_per_worker"]) == 3
            assert len(row["operators_per_worker"]) == row["workers"]
            assert row["wall_s"] > 0 and row["server_cpu_s"] > 0
        assert run["rows"][0]["speedup"] == 1
        assert run["ceiling"]["operators_per_s"] > 0
    assert report["pool"]["standin"]["ceiling"]["requests_per_operator"] > 3
    # Progress on stderr, the table on stdout, and nothing of the clients' own between.
    printed = capsys.readouterr()
    assert "connected to" not in printed.err + printed.out
    assert printed.out.startswith("| workload |")
    table = bench.markdown(report)
    assert table.splitlines()[2].startswith("| balanced depth 1 | 1 | 4 |")
    columns = table.splitlines()[0].count(" p50 ms |")
    assert columns == len(report["modes"])
    assert "History, every promise kept:" in table
    assert "Pool, stand-in: a balanced tree of depth 2 (3 operators of 100 ms)" in table


@pytest.mark.parametrize(
    "argv",
    [
        ["--depths", "0"],
        ["--runs", "x"],
        ["--batch", "200"],  # the report compares the last size with the first
        ["--history", "1000,0"],
        ["--history", "0,,5"],
    ],
)
def test_a_bad_argument_is_a_usage_error_before_anything_runs(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.main(argv)
    assert exit_.value.code == 2
    assert "error: argument" in capsys.readouterr().err


@pytest.mark.peers
@pytest.mark.parametrize("peer", peers.PEERS)
def test_a_peer_computes_what_python_computes(peer: str) -> None:
    """Each peer's calculator, as the benchmark drives it: every answer is checked.

    It needs the bench group (and, for Restate, ``npm ci --prefix
    bench/peers``): ``uv run --group bench pytest -m peers``, as CI runs it
    (.ci/run). The README's ``uv run pytest`` leaves it out.
    """
    if why := peers.missing(peer):
        pytest.skip(why)
    shapes = [balanced(1), balanced(3), bench.chain(3), ("*", ("-", 1, 9), 7)]

    async def compute(driver: Driver) -> float:
        async with driver:
            for expr in shapes:
                await driver.timed(expr)  # which raises on a wrong answer
            return await driver.rate(balanced(2), 4, 8)  # four at once

    with peers.running(peer) as (driver, topology):
        assert asyncio.run(compute(driver)) > 0
        assert driver.n == len(shapes) + 8
        # Nothing the peer runs has a child of its own that would outlive the
        # kill at the end (resonator-postgres's Postgres dies with it).
        for name, process in topology.processes.items():
            children = subprocess.run(["pgrep", "-P", str(process.popen.pid)], check=False)
            assert name == "server" or children.returncode == 1, name
