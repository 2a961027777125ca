"""The benchmark is a tool, not a test: this only checks that it runs and reports."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from bench import bench

if TYPE_CHECKING:
    from pathlib import Path

COLUMNS = {
    "workload",
    "operators",
    "depth",
    "promises",
    "embedded_p50_ms",
    "embedded_p95_ms",
    "distributed_p50_ms",
    "distributed_p95_ms",
    "ratio_p50",
}


def test_a_tiny_run_reports_every_column(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    args = ["--quick", "--depths", "1", "--chain", "2", "--runs", "3", "--memory", "4"]
    assert bench.main([*args, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [row["workload"] for row in report["workloads"]] == ["balanced depth 1", "chain of 2"]
    for row in report["workloads"]:
        assert set(row) == COLUMNS
        assert row["promises"] == 3 * row["operators"] + 1
    assert set(report["throughput_per_s"]) == {"1", "4", "16"}
    assert report["memory"]["expressions"] == 4
    table = bench.markdown(report).splitlines()
    assert table[0].count("|") == len(COLUMNS) + 1
    assert table[2].startswith("| balanced depth 1 | 1 | 1 | 4 |")
