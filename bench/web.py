"""What resonator-web costs its Resonate server: requests per second, idle and following a tree.

    uv run python bench/web.py               # about four minutes
    uv run python bench/web.py --idle 5 --runs 1

It starts resonator-web with a topology of its own on the stand-in, whose
``GET /health`` counts the requests it has answered, with every run of "="
and every operator taking a second, and counts the stand-in's requests:

- idle, with no page open, then with a page open (the Chromium of the
  tests): what a page costs while nothing happens;
- during a computation, started from the page's ``POST /compute`` with no
  page open, then typed into a page, which follows its tree live: the
  difference, over the time the computation took, is what following costs;
- after the page is closed: back to the idle figure.

It prints the figures as Markdown (docs/web.md quotes them).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
import urllib.request
from typing import TYPE_CHECKING

from playwright.sync_api import expect, sync_playwright

from resonator.client.calculator import new_id
from resonator.harness.processes import WAIT
from tests.browser import launch, stop, web

if TYPE_CHECKING:
    from collections.abc import Callable

    from playwright.sync_api import Browser, Page

EXPRESSIONS = {
    "(1 + 2) * (3 - 4)": 10,  # promises
    "((1 + 2) * (3 - 4)) - ((5 + 6) * (7 - 8))": 22,
}


def requests(server: str) -> int:
    """How many requests the stand-in has answered."""
    with urllib.request.urlopen(f"{server}/health", timeout=WAIT) as answer:
        return int(json.load(answer)["requests"])


def rate(server: str, seconds: float) -> float:
    """Requests per second over ``seconds`` of waiting."""
    first = requests(server)
    time.sleep(seconds)
    return (requests(server) - first) / seconds


def done(listed: bytes, id: str) -> bool:
    return any(c["id"] == id and c["state"] == "resolved" for c in json.loads(listed))


def counted[T](
    server: str, compute: Callable[[T, str], None], on: T, text: str
) -> tuple[int, float]:
    """(requests, seconds) that ``compute(on, text)`` took."""
    first, began = requests(server), time.monotonic()
    compute(on, text)
    return requests(server) - first, time.monotonic() - began


def unwatched(page: str, text: str) -> None:
    """Compute ``text`` as the page would, with no page open, and wait for its value."""
    address = page.removeprefix("http://").partition("/")[0]
    connection = http.client.HTTPConnection(address, timeout=WAIT)
    body = json.dumps({"text": text, "id": new_id()})
    origin = {"Origin": f"http://{address}", "Content-Type": "application/json"}
    connection.request("POST", "/compute", body, origin)
    id = json.loads(connection.getresponse().read())["id"]
    connection.close()
    resolved(page, id)


def resolved(page: str, id: str) -> None:
    """Wait for computation ``id`` to resolve, on the page's own stream of the list.

    (Which reads nothing from the Resonate server.)
    """
    address = page.removeprefix("http://").partition("/")[0]
    connection = http.client.HTTPConnection(address, timeout=WAIT)
    connection.request("GET", "/events")
    event = b""
    for line in connection.getresponse():
        if line.startswith(b"event: "):
            event = line[7:].strip()
        elif event == b"computations" and line.startswith(b"data: ") and done(line[6:], id):
            break
    connection.close()


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="bench/web.py", description=__doc__.split("\n")[0])
    cli.add_argument("--idle", type=float, default=20, help="seconds of each idle count")
    cli.add_argument("--runs", type=int, default=3, help="computations of each kind")
    args = cli.parse_args(argv)
    process, page_url = web(RESONATOR_EXP_DELAY="1", RESONATOR_OP_DELAY="1")
    server = process.wait_for(r"^the Resonate server: (\S+)$").group(1)
    rows = []
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            idle = rate(server, args.idle)
            page = opened(browser, page_url)
            idle_page = rate(server, args.idle)
            page.close()
            for text, promises in EXPRESSIONS.items():
                alone = [counted(server, unwatched, page_url, text) for _ in range(args.runs)]
                page = opened(browser, page_url)
                followed = [counted(server, typed, page, text) for _ in range(args.runs)]
                page.close()
                gone = [
                    counted(server, left, opened(browser, page_url), text) for _ in range(args.runs)
                ]
                rows.append((text, promises, alone, followed, gone))
            after = rate(server, args.idle)
            browser.close()
    finally:
        stop(process)
    print(
        f"idle, no page: {idle:.2f} requests/s; a page open: {idle_page:.2f}; closed: {after:.2f}"
    )
    print()
    print(
        "| expression | promises | no page | a page following | the page closed at once "
        "| added by following |"
    )
    print("|---|---|---|---|---|---|")
    for text, promises, *runs in rows:
        (a, s), (f, t), (g, u) = [mean(figures) for figures in runs]
        print(
            f"| `{text}` | {promises} | {a:.0f} requests in {s:.1f} s | {f:.0f} in {t:.1f} s "
            f"| {g:.0f} in {u:.1f} s | {(f - a) / t:.1f} requests/s |"
        )
    return 0


def mean(runs: list[tuple[int, float]]) -> tuple[float, float]:
    """The mean requests, and the mean seconds, of ``runs``."""
    return statistics.mean(n for n, _ in runs), statistics.mean(s for _, s in runs)


def opened(browser: Browser, url: str) -> Page:
    page = browser.new_page()
    page.goto(url)
    expect(page.locator("#link")).to_have_attribute("data-state", "live")
    return page


def left(page: Page, text: str) -> None:
    """Type ``text`` into the page, close it once its tree shows, and wait for the value."""
    id, url = chosen(page, text), page.url
    page.locator(f'#tree .node[data-id="{id}"]').wait_for()
    page.close()
    resolved(url, id)


def chosen(page: Page, text: str) -> str:
    """Type ``text`` into the page; the id of the computation, once the page shows its tree."""
    shown = page.locator("#selected").inner_text()
    page.get_by_label("Expression").fill(text)
    page.get_by_label("Expression").press("Enter")
    expect(page.locator("#selected")).not_to_have_text(shown)
    return page.locator("#selected").inner_text()


def typed(page: Page, text: str) -> None:
    """Type ``text`` into the page, which chooses it and follows its tree until it resolves."""
    id = chosen(page, text)
    root = page.locator(f'#tree .node[data-id="{id}"]')
    expect(root).to_have_attribute("data-state", "resolved", timeout=WAIT * 1000)


if __name__ == "__main__":
    sys.exit(main())
