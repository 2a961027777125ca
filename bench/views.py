"""What the views of a big tree cost: the page's update time, the terminal's redraw, and what
watching costs the computation.

    uv run python -m bench.views              # about ten minutes on two busy cores
    uv run python -m bench.views --sizes 10 100 --chain

It starts resonator-web with a topology of its own on the stand-in (steps
without delays: the computation as fast as it goes, so that what watching
takes from it shows), and computes, for each size, a balanced sum of ones
(``1+1+(1+1)``...; 3k - 2 promises for k ones), and with ``--chain`` the
chain ``1+1+...+1`` of 999 operators, three times each:

- unwatched: started with the page's ``POST /compute``, no page open;
- followed by a page (the Chromium of the tests), typed into it: each node
  the page shows pending is timed from the moment the stand-in settled its
  promise (its ``settledAt``) to the moment the DOM shows it settled (a
  MutationObserver's ``Date.now()``: the same clock);
- followed by ``:watch``, in this process: a Calculator's ``follow``, each
  state drawn as the live table is, on a terminal of 100 by 30 (rich,
  recording), each redraw timed.

The computation's time is its root's, from ``createdAt`` to ``settledAt``
(the stand-in's clock); its requests are the stand-in's count (``/health``)
from the request that starts it to the value.
It prints the figures as Markdown (docs/benchmark.md quotes them).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import io
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from playwright.sync_api import expect, sync_playwright
from rich.console import Console
from rich.live import Live

from bench.web import opened, requests, resolved
from resonator.client.calculator import Calculator, new_id
from resonator.client.trees import changes
from resonator.harness.processes import WAIT
from resonator.parser import Expr, render
from resonator.resonator import connect
from resonator.terminal.drawing import table
from resonator.trace import Tracer
from tests.browser import launch, stop, web
from tests.helpers import ask, envelope

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from resonator.client.trees import Node

SIZES = {10: 4, 100: 34, 1000: 334, 3000: 1000}  # promises: ones summed
CHAIN = "+".join(["1"] * 1000)  # 2,998 promises too, but 999 deep
SCREEN = os.terminal_size((100, 30))
# For each node of the tree shown pending, when it is first shown settled (Date.now(), ms).
OBSERVE = """() => {
    const pending = ["running", "awaiting", "unclaimed", "pending"];
    const seen = new Set();
    window.shown = {};
    const look = () => {
        for (const node of document.querySelectorAll("#tree .node[data-id]")) {
            const id = node.dataset.id;
            if (pending.includes(node.dataset.state)) seen.add(id);
            else if (seen.has(id) && !(id in window.shown)) window.shown[id] = Date.now();
        }
    };
    const tree = document.getElementById("tree");
    new MutationObserver(look).observe(tree, {childList: true, subtree: true});
}"""


def summed(ones: int) -> str:
    """A balanced sum of ``ones`` ones: pairs of pairs, the odd one out carried up."""
    level: list[Expr] = [1] * ones
    while len(level) > 1:
        pairs: list[Expr] = [("+", level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = pairs + level[len(pairs) * 2 :]
    return render(level[0]).replace(" ", "")


def settled(server: str, id: str) -> int:
    """When the stand-in settled promise ``id``, in ms since the epoch."""
    return int(record(server, id)["settledAt"])


def took(server: str, id: str) -> float:
    """Seconds from the creation of promise ``id`` to its settling, by the stand-in's clock."""
    promise = record(server, id)
    return (int(promise["settledAt"]) - int(promise["createdAt"])) / 1000


def record(server: str, id: str) -> dict[str, Any]:
    status, body = ask(f"{server}/", envelope("promise.get", id=id))
    assert status == 200, body
    promise: dict[str, Any] = json.loads(body)["data"]["promise"]
    return promise


def unwatched(server: str, page: str, text: str) -> tuple[float, int]:
    """(seconds to the root's settling, requests) of ``text``, no page open."""
    address = page.removeprefix("http://").partition("/")[0]
    first = requests(server)
    id = ask_page(address, {"text": text, "id": new_id()})["id"]
    resolved(page, id)
    return took(server, id), requests(server) - first


def ask_page(address: str, body: dict[str, Any]) -> Any:
    """The answer to a POST /compute to the page, sent as the page sends it."""
    connection = http.client.HTTPConnection(address, timeout=WAIT)
    origin = {"Origin": f"http://{address}", "Content-Type": "application/json"}
    connection.request("POST", "/compute", json.dumps(body), origin)
    given = json.loads(connection.getresponse().read())
    connection.close()
    return given


def followed(server: str, page: Page, text: str) -> tuple[float, int, list[float], int]:
    """(seconds, requests, the update time of each node shown in ms, rows shown at the end) of
    ``text`` typed into ``page``."""
    page.evaluate(OBSERVE)
    shown = page.locator("#selected").inner_text()
    first = requests(server)
    page.get_by_label("Expression").fill(text)
    page.get_by_label("Expression").press("Enter")
    expect(page.locator("#selected")).not_to_have_text(shown)
    id = page.locator("#selected").inner_text()
    root = page.locator(f'#tree .node[data-id="{id}"]')
    expect(root).to_have_attribute("data-state", "resolved", timeout=WAIT * 15 * 1000)
    count = requests(server) - first
    seen: dict[str, int] = page.evaluate("window.shown")
    lags = [float(at - settled(server, node)) for node, at in seen.items()]
    return took(server, id), count, lags, page.locator("#tree .node").count()


async def watched(server: str, text: str) -> tuple[float, int, list[float], list[float]]:
    """(seconds, requests, each redraw's ms, each read's ms) of ``text`` computed here and
    followed as ``:watch`` follows it, drawn on a terminal of 100 by 30."""
    resonate, connection = connect(server, "prompt", "bench", timedelta(seconds=10), Tracer("b"))
    calculator = Calculator(resonate, connection)
    console = Console(file=io.StringIO(), force_terminal=True, width=SCREEN.columns)
    console.size = SCREEN
    redraws: list[float] = []
    reads: list[float] = []
    async with calculator:
        await calculator.ready()
        reader, id = calculator.reader(), new_id()
        read = reader.tree

        async def timed(id: str) -> Node | None:
            began = time.perf_counter()
            try:
                return await read(id)
            finally:
                reads.append((time.perf_counter() - began) * 1000)

        reader.tree = timed  # type: ignore[method-assign]
        first = requests(server)
        await calculator.begin(text, id)
        with Live(console=console, auto_refresh=False) as live:
            async for root in changes(reader, id):
                drawing = time.perf_counter()
                live.update(table(root, SCREEN), refresh=True)
                redraws.append((time.perf_counter() - drawing) * 1000)
        count = requests(server) - first
    return took(server, id), count, redraws, reads


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="bench/views.py", description=__doc__.split("\n")[0])
    cli.add_argument("--sizes", type=int, nargs="+", choices=SIZES, default=list(SIZES))
    cli.add_argument("--chain", action="store_true", help="and the chain of 999 operators")
    args = cli.parse_args(argv)
    process, page_url = web(RESONATOR_OP_DELAY="0", RESONATOR_EXP_DELAY="0")
    server = process.wait_for(r"^the Resonate server: (\S+)$").group(1)
    texts = {f"{3 * SIZES[size] - 2:,}": summed(SIZES[size]) for size in args.sizes}
    if args.chain:
        texts["2,998, a chain 999 deep"] = CHAIN
    rows = []
    try:
        with sync_playwright() as playwright, ThreadPoolExecutor(1) as thread:
            browser = launch(playwright)
            for size, text in texts.items():
                alone = unwatched(server, page_url, text)
                # On a thread: Playwright's loop runs on this one.
                terminal = thread.submit(asyncio.run, watched(server, text)).result()
                page = opened(browser, page_url)
                rows.append((size, alone, followed(server, page, text), terminal))
                page.close()
            browser.close()
    finally:
        stop(process)
    load = os.getloadavg()[0]
    print(f"One run, on the stand-in; load average {load:.1f} on {os.cpu_count()} cores.\n")
    print(
        "| promises | unwatched | followed by the page | followed by `:watch` "
        "| page update, median (max) | boxes | `:watch` redraw, median (max) | a read, median |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size, (s, n), (ps, pn, lags, boxes), (ws, wn, redraws, reads) in rows:
        print(
            f"| {size} | {s:.1f} s, {n:,} requests "
            f"| {ps:.1f} s, {pn:,} | {ws:.1f} s, {wn:,} "
            f"| {statistics.median(lags):.0f} ms ({max(lags):.0f}) | {boxes} "
            f"| {statistics.median(redraws):.0f} ms ({max(redraws):.0f}) "
            f"| {statistics.median(reads):.0f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
