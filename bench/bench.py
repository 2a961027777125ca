"""What a durable step costs, embedded versus distributed, measured in one run.

    uv run python bench/bench.py            # the full set, a few minutes
    uv run python bench/bench.py --quick    # a reduced set, under a minute

It starts its own stand-in server and workers (exp/lhs, exp/rhs, one ops) on a
free loopback port and stops them at the end. Every workload is evaluated
through the same client code in two modes: embedded (the SDK's in-process
server) and distributed (the stand-in and the three workers). It prints a
Markdown table, writes the numbers as JSON and draws docs/bench.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resonator.connections import Link, Server
from resonator.processes import Topology
from resonator.resonator import calculate, connect
from resonator.trace import Process
from resonator.tree import Node, Reader

ROOT = Path(__file__).resolve().parent.parent

if TYPE_CHECKING:
    from resonate.resonate import Resonate

    from resonator.parser import Expr, Op

OPS: tuple[Op, ...] = ("+", "*", "-")


def balanced(depth: int) -> Expr:
    """A full binary tree: 2**depth - 1 operators, ``depth`` levels."""

    def build(level: int, at: int) -> Expr:
        if level == 0:
            return at % 9 + 1
        return (OPS[level % 3], build(level - 1, 2 * at), build(level - 1, 2 * at + 1))

    return build(depth, 0)


def chain(operators: int) -> Expr:
    """((1 + 2) + 3) + ...: every operator waits for the one before it."""
    expr: Expr = 1
    for i in range(operators):
        expr = ("+", expr, i + 2)
    return expr


def size(expr: Expr) -> tuple[int, int]:
    """(operators, depth)"""
    match expr:
        case (_, lhs, rhs):
            (left_ops, left_depth), (right_ops, right_depth) = size(lhs), size(rhs)
            return left_ops + right_ops + 1, max(left_depth, right_depth) + 1
        case _:
            return 0, 0


def count(node: Node | None) -> int:
    return 0 if node is None else 1 + sum(count(child) for child in node.children)


class Client:
    """One Resonate client per mode, evaluating under fresh ids."""

    def __init__(self, resonate: Resonate, mode: str) -> None:
        self.resonate, self.mode, self.n = resonate, mode, 0

    async def evaluate(self, expr: Expr) -> tuple[str, float]:
        self.n += 1
        id = f"bench-{self.mode}-{self.n}"
        start = time.perf_counter()
        await calculate(self.resonate, id, expr).result()
        return id, time.perf_counter() - start

    async def latencies(self, expr: Expr, runs: int, warmup: int) -> list[float]:
        for _ in range(warmup):
            await self.evaluate(expr)
        return [(await self.evaluate(expr))[1] for _ in range(runs)]

    async def promises(self, expr: Expr) -> int:
        """Durable promises one evaluation creates, counted on the server."""
        id, _ = await self.evaluate(expr)
        return count(await Reader(self.resonate.promises, None).tree(id))

    async def throughput(self, expr: Expr, in_flight: int, total: int) -> float:
        """Expressions per second with ``in_flight`` evaluations at all times."""
        remaining = total

        async def lane() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await self.evaluate(expr)

        start = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(in_flight)))
        return total / (time.perf_counter() - start)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def percentile(samples: list[float], p: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(p) - 1] * 1000


async def measure(
    topology: Topology, workloads: dict[str, Expr], runs: int, flights: list[int], memory: int
) -> dict[str, Any]:
    link = Link(topology.url)
    distributed = connect(Server(topology.url, link), "prompt", "bench", Process("prompt"))
    distributed.start()
    await link.up.wait()
    remote = Client(distributed, "distributed")
    rows = []
    try:
        for name, expr in workloads.items():
            operators, depth = size(expr)
            row: dict[str, Any] = {"workload": name, "operators": operators, "depth": depth}
            # A fresh in-process server for each workload: the SDK's model
            # slows down as promises pile up (see the README), and the
            # embedded numbers should not depend on the workloads before.
            embedded = connect(Server(None), "prompt", "bench", Process("embedded"))
            embedded.start()
            try:
                local = Client(embedded, "embedded")
                row["promises"] = await local.promises(expr)
                for mode, client in (("embedded", local), ("distributed", remote)):
                    samples = await client.latencies(expr, runs, warmup=2)
                    row[f"{mode}_p50_ms"] = percentile(samples, 50)
                    row[f"{mode}_p95_ms"] = percentile(samples, 95)
            finally:
                await embedded.stop()
            row["ratio_p50"] = row["distributed_p50_ms"] / row["embedded_p50_ms"]
            rows.append(row)
            print(
                f"  {name}: {row['embedded_p50_ms']:.1f} ms embedded, "
                f"{row['distributed_p50_ms']:.1f} ms distributed",
                file=sys.stderr,
            )
        sample = balanced(2)
        throughput = {
            str(n): await remote.throughput(sample, n, total=max(4 * n, runs)) for n in flights
        }
        server = topology["server"].popen.pid
        before = rss_kib(server)
        await remote.throughput(sample, max(flights), total=memory)
        after = rss_kib(server)
    finally:
        await distributed.stop()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "runs_per_point": runs,
        "workloads": rows,
        "throughput_workload": "balanced depth 2 (3 operators), distributed",
        "throughput_per_s": throughput,
        "memory": {"expressions": memory, "server_rss_kib_before": before, "after": after},
    }


def markdown(report: dict[str, Any]) -> str:
    head = (
        "| workload | operators | depth | promises | embedded p50 ms | embedded p95 ms "
        "| distributed p50 ms | distributed p95 ms | distributed / embedded |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in report["workloads"]:
        lines.append(
            f"| {r['workload']} | {r['operators']} | {r['depth']} | {r['promises']} "
            f"| {r['embedded_p50_ms']:.1f} | {r['embedded_p95_ms']:.1f} "
            f"| {r['distributed_p50_ms']:.1f} | {r['distributed_p95_ms']:.1f} "
            f"| {r['ratio_p50']:.1f}x |"
        )
    flights = ", ".join(f"{n} in flight: {v:.0f}/s" for n, v in report["throughput_per_s"].items())
    memory = report["memory"]
    lines += [
        "",
        f"Throughput ({report['throughput_workload']}): {flights}.",
        f"Stand-in memory: {memory['server_rss_kib_before'] / 1024:.0f} MiB before and "
        f"{memory['after'] / 1024:.0f} MiB after {memory['expressions']} more expressions.",
        f"Measured {report['date']} on {report['machine']}, "
        f"{report['runs_per_point']} evaluations per point after a warm-up.",
    ]
    return "\n".join(lines)


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for mode, style in (("embedded", "--"), ("distributed", "-")):
        for shape, marker in (("balanced", "o"), ("chain", "s")):
            rows = [r for r in report["workloads"] if r["workload"].startswith(shape)]
            if rows:
                axes.plot(
                    [r["operators"] for r in rows],
                    [r[f"{mode}_p50_ms"] for r in rows],
                    style,
                    marker=marker,
                    label=f"{shape}, {mode}",
                )
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:g}"))
    axes.set_yscale("log")
    axes.set_xlabel("operators in the expression")
    axes.set_ylabel("p50 latency (ms)")
    axes.set_title(f"Resonator: latency per expression ({report['date']})")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    cli.add_argument("--quick", action="store_true", help="a reduced set, under a minute")
    cli.add_argument("--depths", type=int, help="balanced depths 1..N (6; --quick 4)")
    cli.add_argument("--chain", type=int, help="operators in the chain (32; --quick 8)")
    cli.add_argument("--runs", type=int, help="evaluations per point (20; --quick 10)")
    cli.add_argument("--memory", type=int, help="expressions for the memory check (1000; 200)")
    cli.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / "results.json",
        help="where the numbers go (default: %(default)s, not tracked)",
    )
    cli.add_argument(
        "--publish",
        action="store_true",
        help="also write the figures into docs/benchmark.md and draw docs/bench.png "
        "(needs the bench group: uv run --group bench ...)",
    )
    args = cli.parse_args(argv)
    defaults = (4, 8, 10, 200) if args.quick else (6, 32, 20, 1000)
    for name, value in zip(("depths", "chain", "runs", "memory"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    workloads = {f"balanced depth {d}": balanced(d) for d in range(1, args.depths + 1)}
    workloads[f"chain of {args.chain}"] = chain(args.chain)
    with Topology() as topology:
        topology.standard()
        report = asyncio.run(measure(topology, workloads, args.runs, [1, 4, 16], args.memory))
    print(markdown(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    if args.publish:
        publish(report)
    return 0


def publish(report: dict[str, Any]) -> None:
    """The figures into the page that discusses them, and the chart beside it."""
    page = ROOT / "docs" / "benchmark.md"
    text = page.read_text()
    begin, end = "<!-- bench:begin -->\n", "<!-- bench:end -->"
    head, rest = text.split(begin)
    page.write_text(head + begin + markdown(report) + "\n" + end + rest.split(end)[1])
    chart(report, ROOT / "docs" / "bench.png")
    print(f"wrote {page} and docs/bench.png", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
