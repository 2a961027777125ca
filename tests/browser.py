"""Chromium driven by Playwright: for ``tests/test_web.py``, and for the picture ``docs/web.png``.

    uv run python -m tests.browser                 # docs/web.png
    uv run python -m tests.browser out.png --width 1100

The browser is Debian's Chromium (``apt-get install chromium``), driven by
Playwright from PyPI (in the dev dependency group); Playwright's own browser
builds are never downloaded. The picture is of the page in the middle of a
crash: resonator-web started with slowed steps, ``(1 + 2) * (3 - 4)``
computed, ``exp/lhs`` killed with its button as it starts ``= 1 + 2``, and
taken once its work is unclaimed and ``exp/rhs`` has done what it can (what
the demo waits for in its first scenario, read here from the page's
``data-state`` attributes).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from playwright.sync_api import sync_playwright

from resonator.client.scenarios import ARTICLE
from resonator.harness.processes import WAIT, Process, python

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

CHROMIUM = "/usr/bin/chromium"
# Headless, and quiet: no request of its own to anywhere (updates, sync,
# QUIC probes), so that every request the page makes is the page's.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The node whose work exp/lhs had when it died, unclaimed, and every step for
# exp/rhs that could be done without exp/lhs, done.
MIDWAY = """() => {
    const unclaimed = document.querySelector('.node[data-where="exp/lhs"][data-state="unclaimed"]');
    const rhs = [...document.querySelectorAll('.node[data-where="exp/rhs"]')]
        .filter((node) => !node.parentElement.querySelector("ul"));
    return unclaimed !== null && rhs.length > 0 && rhs.every((n) => n.dataset.state === "resolved");
}"""


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


def web(*args: str, **env: str) -> tuple[Process, str]:
    """``resonator-web --port 0 ARGS`` running, and the address it printed first."""
    command = python("-m", "resonator.web.app", "--port", "0", *args)
    process = Process("web", command, os.environ | {"PYTHONUNBUFFERED": "1", **env})
    # Printed once its server and four workers are up: on a busy machine,
    # several times what one process takes to start.
    return process, process.wait_for(r"^(http://\S+)$", timeout=3 * WAIT).group(1)


def stop(process: Process) -> int:
    """SIGTERM, as a service manager stops it; its exit status."""
    process.signal(signal.SIGTERM)
    return process.wait_closed()


def midway(page: Page) -> None:
    """Compute the article's expression, and kill exp/lhs as it starts on = 1 + 2."""
    page.get_by_label("Expression").fill(ARTICLE)
    page.get_by_label("Expression").press("Enter")
    page.locator('.node[data-where="exp/lhs"][data-state="running"]').first.wait_for()
    page.get_by_role("button", name="Kill exp/lhs").click()
    page.wait_for_function(MIDWAY, timeout=WAIT * 1000)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        prog="python -m tests.browser",
        description="A picture of resonator-web in the middle of a crash.",
    )
    cli.add_argument("path", nargs="?", type=Path, default=Path("docs/web.png"))
    cli.add_argument("--width", type=int, default=1400, help="the window's (default: %(default)s)")
    cli.add_argument(
        "--height",
        type=int,
        default=720,
        help="the window's; the picture is as tall as the page (default: %(default)s)",
    )
    args = cli.parse_args(argv)
    # Steps slow enough to kill exp/lhs in the middle of one, whatever the machine.
    process, url = web(RESONATOR_EXP_DELAY="1")
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(url)
            midway(page)
            page.screenshot(path=args.path, full_page=True)
            browser.close()
    finally:
        stop(process)
    print(f"saved {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
