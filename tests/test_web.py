"""resonator-web in a real browser: Debian's Chromium, driven by Playwright.

Every page opened here fails its test on any console error, any request to
another origin and any answer of 400 or more. Nothing sleeps: each step waits
for a state of the page (a ``data-state``, a text), or for a line printed.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zipfile import ZipFile

import pytest
from playwright.sync_api import expect, sync_playwright

from resonator.harness.processes import WAIT, free_port, python
from tests.browser import launch, midway, stop, web
from tests.helpers import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, Page, ViewportSize

    from resonator.harness.processes import Process

expect.set_options(timeout=WAIT * 1000)

# Each "=" takes a second: time to kill exp/lhs in the middle of one. And
# four-second leases: a worker starved of the CPU for a second, on a busy
# machine, keeps its task (an operator takes one second).
SLOW = {"RESONATOR_EXP_DELAY": "1", "RESONATOR_TTL": "4"}
PHONE: ViewportSize = {"width": 420, "height": 800}  # a phone's screen, in CSS pixels


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[Process, str]]:
    """resonator-web with a topology of its own, stopped with SIGTERM at the end."""
    process, url = web(**SLOW)
    try:
        yield process, url
        stops_with_everything_it_started(process, signal.SIGTERM)
    finally:
        stopped(process)


@pytest.fixture
def url(site: tuple[Process, str]) -> str:
    return site[1]


@pytest.fixture
def page(browser: Browser, url: str) -> Iterator[Page]:
    """A page of its own; the test fails if it logs an error or asks anywhere else."""
    context = browser.new_context()
    page = context.new_page()
    problems = watch(page, url)
    try:
        page.goto(url)
        expect(page.locator("#link")).to_have_attribute("data-state", "live")
        yield page
        assert problems == []
    finally:
        context.close()


def watch(page: Page, url: str) -> list[str]:
    """What goes wrong on ``page``, as it happens."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "request",
        lambda r: None if r.url.startswith(url) else problems.append(f"asked {r.url}"),
    )
    page.on(
        "response",
        lambda r: problems.append(f"{r.status} for {r.url}") if r.status >= 400 else None,
    )
    return problems


def compute(page: Page, text: str, id: str = "") -> None:
    page.get_by_label("Id").fill(id)
    page.get_by_label("Expression").fill(text)
    page.get_by_label("Expression").press("Enter")


# ── The page ────────────────────────────────────────────────────────────────


def test_a_worker_killed_with_its_button_leaves_its_work_unclaimed_until_it_is_back(
    page: Page,
) -> None:
    midway(page)  # computes the article's expression, kills exp/lhs as it starts = 1 + 2
    root = page.locator("#tree > li > .node")
    id = root.get_attribute("data-id")
    assert id is not None
    listed = page.locator(f'#computations li[data-id="{id}"]')
    expect(page.locator('.process[data-name="lhs"]')).to_have_attribute("data-up", "down")
    # What was for exp/lhs waits for it, and the computation with it.
    expect(
        page.locator('.node[data-where="exp/lhs"][data-state="unclaimed"]').first
    ).to_be_visible()
    expect(listed).to_have_attribute("data-state", "running")
    expect(root).to_have_attribute("data-state", "awaiting")
    page.get_by_role("button", name="Start exp/lhs").click()
    expect(page.locator('.process[data-name="lhs"]')).to_have_attribute("data-up", "up")
    expect(root).to_have_attribute("data-state", "resolved")
    expect(listed.locator(".value")).to_have_text("= -3")
    expect(listed.locator(".took")).to_have_text(re.compile(r"^\d+\.\d s$"))
    # Ten promises, all settled; each operator ran once (on whichever ops worker).
    expect(page.locator('.node[data-state="resolved"]')).to_have_count(10)
    expect(page.locator("#runs li")).to_have_count(3)
    for step in (f"{id}:1.3", f"{id}:2.3", f"{id}:3"):
        expect(page.locator(f'#runs li[data-step="{step}"]')).to_have_attribute("data-runs", "1")
    values = {n: page.locator(f'.node[data-id="{id}:{n}"] .value').inner_text() for n in "123"}
    assert values == {"1": "= 3", "2": "= -1", "3": "= -3"}
    # Each operator's node names the worker that ran it, as the runs below say.
    for step in (f"{id}:1.3", f"{id}:2.3", f"{id}:3"):
        worker = page.locator(f'#runs li[data-step="{step}"]').inner_text().rpartition(" ")[2]
        assert worker in ("ops1", "ops2")
        expect(page.locator(f'.node[data-id="{step}"] .ran')).to_have_text(f"ran on {worker}")


def test_at_phone_width_a_kill_and_what_it_does_are_on_the_first_screen(
    browser: Browser, url: str
) -> None:
    context = browser.new_context(viewport=PHONE)
    try:
        page = context.new_page()
        problems = watch(page, url)
        page.goto(url)
        expect(page.locator("#link")).to_have_attribute("data-state", "live")
        # Every process's button on its name's line, and on the first screen.
        for process in page.locator(".process").all():
            name = process.locator(".name").bounding_box()
            button = process.get_by_role("button").bounding_box()
            assert name and button, process.inner_text()
            assert name["y"] <= button["y"] + button["height"] / 2 <= name["y"] + name["height"]
            expect(process.get_by_role("button")).to_be_in_viewport(ratio=1)
        midway(page)  # a click scrolls to a button off the screen: none may be
        assert page.evaluate("window.scrollY") == 0
        # The kill's effect beside it: exp/lhs down, its work unclaimed, the root waiting.
        id = page.locator("#tree > li > .node").get_attribute("data-id")
        for shown in (
            page.get_by_role("button", name="Start exp/lhs"),
            page.locator(f'.node[data-id="{id}"]'),
            page.locator(f'.node[data-id="{id}:1"][data-state="unclaimed"]'),
        ):
            expect(shown).to_be_in_viewport(ratio=1)
        page.get_by_role("button", name="Start exp/lhs").click()
        expect(page.locator(f'.node[data-id="{id}"]')).to_have_attribute("data-state", "resolved")
        assert problems == []
    finally:
        context.close()


# (text, the parser's message, the column of the caret)
MISTAKES = [
    ("(1 + 2) * (3 -", "expected a number or '(' at the end", 14),
    ("12 + x * 3", "unexpected character 'x': expected a number or '('", 5),
    ("(1 + 2))", "unmatched ')'", 7),
    ("2 ** 3", "'**' is not supported: use +, - or *", 2),
]


@pytest.mark.parametrize(("text", "message", "column"), MISTAKES)
def test_a_syntax_error_shows_the_parsers_message_and_a_caret_under_its_column(
    page: Page, url: str, text: str, message: str, column: int
) -> None:
    before = len(part(url, "computations"))  # as the server has them, not as shown yet
    compute(page, text)
    said = page.locator("#message")
    expect(said).to_contain_text(f"syntax error: {message}")
    assert said.inner_text().split("\n") == [
        f"syntax error: {message}",
        f"  {text}",
        f"  {' ' * column}^",
    ]
    # Drawn under it, too: the caret's left edge is the column's (past the
    # end, the right edge of the last character).
    line = len(f"syntax error: {message}\n")
    caret = line + len(f"  {text}\n") + 2 + column
    under = line + 2 + min(column, len(text) - 1)
    left, right, x = said.evaluate(CHARACTER, [under, caret])
    assert abs((left if column < len(text) else right) - x) < 1
    # Nothing was started, and the page goes on.
    assert len(part(url, "computations")) == before
    compute(page, "6 * 7")
    listed = page.locator("#computations li")
    expect(listed).to_have_count(before + 1)
    expect(listed.first.locator(".value")).to_have_text("= 42")
    expect(said).to_be_empty()


# (left and right edges of one character, the left edge of another) in a <pre>'s text
CHARACTER = """(pre, [under, caret]) => {
    const text = pre.firstChild;
    const box = (i) => {
        const range = document.createRange();
        range.setStart(text, i);
        range.setEnd(text, i + 1);
        return range.getBoundingClientRect();
    };
    return [box(under).left, box(under).right, box(caret).left];
}"""


def test_an_id_names_a_computation_and_a_second_one_attaches_to_it(page: Page) -> None:
    compute(page, "(2 + 3) * 4", id="twenty")
    listed = page.locator('#computations li[data-id="twenty"]')
    expect(listed.locator(".value")).to_have_text("= 20")
    compute(page, "(2 + 3) * 4", id="twenty")  # attached: computed once, listed once
    expect(listed).to_have_count(1)
    expect(page.locator("#tree .node")).to_have_count(7)  # 2 + 3 has three, 4 none
    compute(page, "1 + 1", id="twenty")  # as the prompt says of an id reused
    expect(page.locator("#message")).to_have_text(
        "error: id twenty already names another expression: (2 + 3) * 4"
    )
    compute(page, "", id="no-such-computation")
    expect(page.locator("#message")).to_have_text("error: there is no promise no-such-computation")
    compute(page, "", id="bad:id")
    expect(page.locator("#message")).to_contain_text("an id is 1 to 100 printable ASCII")


def test_the_three_failure_modes_play_as_the_demo_plays_them(page: Page) -> None:
    story = page.locator("#story")
    plays = page.locator("#plays button")
    expect(plays).to_have_count(3)
    page.get_by_role("button", name="Scenario 1").click()
    expect(story).to_contain_text("Scenario 1: exp/lhs dies right after it takes = 1 + 2.")
    expect(plays.first).to_be_disabled()  # one at a time
    expect(page.locator('.node[data-id="demo-1:1"]')).to_have_attribute("data-state", "unclaimed")
    expect(story).to_contain_text("prompt-1 printed -3: right")
    expect(story).to_contain_text("Each operator ran once: the work for exp/lhs waited for it.")
    expect(plays.first).to_be_enabled()

    # No line for each operator that ran once: the page lists the runs, under the tree.
    expect(story).not_to_contain_text(re.compile(r"\] ran once, on "))
    page.get_by_role("button", name="Scenario 2").click()
    expect(story).not_to_contain_text("Scenario 1")  # each scenario's story on its own
    expect(story).to_contain_text("prompt-2 printed -3: right")
    expect(story).to_contain_text("Nothing that had settled ran again.")
    # The operation cut off ran again, on the other worker; the list says so.
    expect(page.locator('#computations li[data-id="demo-2"] .value')).to_have_text("= -3")
    ran = page.locator('#runs li[data-step="demo-2:1.3"]')
    expect(ran).to_have_attribute("data-runs", re.compile(r"^[2-9]$"))
    expect(ran).to_contain_text(re.compile(r"^\+ 1 2 \[demo-2:1\.3\] ran (twice|\d times), on "))

    page.get_by_role("button", name="Scenario 3").click()
    expect(story).to_contain_text("killed prompt-3 (SIGKILL) while it waits")
    expect(story).to_contain_text("another-prompt-3 printed -3: right")
    expect(story).to_contain_text("Each operator ran once")
    expect(page.locator('.process[data-name="another-prompt-3"]')).to_have_attribute(
        "data-up", "down"
    )
    for step in ("demo-3:1.3", "demo-3:2.3", "demo-3:3"):
        expect(page.locator(f'#runs li[data-step="{step}"]')).to_have_attribute("data-runs", "1")


def test_the_pool_grows_and_shrinks_with_its_buttons_and_each_operator_names_its_worker(
    page: Page, url: str
) -> None:
    pool = page.locator("#pool-size")
    expect(pool).to_have_text("ops pool: 2 up")
    page.get_by_role("button", name="Add an ops worker").click()
    card = page.locator('.process[data-name="ops3"]')
    expect(card).to_have_attribute("data-up", "up")
    expect(card.locator(".lines")).to_contain_text("worker started: group=ops pid=ops3")
    expect(pool).to_have_text("ops pool: 3 up")
    (pid,) = [p["pid"] for p in part(url, "processes") if p["name"] == "ops3"]
    assert pid in running()
    # Seven operators, four at a time at the bottom: the stand-in hands each to the
    # least busy member of the pool, so the new one takes some.
    text = "((1 + 2) * (3 - 4)) - ((5 + 6) * (7 - 8))"
    compute(page, text)
    expect(page.locator("#tree > li > .node")).to_have_attribute("data-state", "resolved")
    operators = page.locator('.node[data-where="ops"]')
    expect(operators).to_have_count(7)
    ran = [operators.nth(i).get_attribute("data-ran") for i in range(7)]
    assert set(ran) <= {"ops1", "ops2", "ops3"} and "ops3" in ran, ran
    expect(page.locator("#spread")).to_contain_text("ops3 ")
    page.get_by_role("button", name="Remove an ops worker").click()
    expect(card).to_have_count(0)
    expect(pool).to_have_text("ops pool: 2 up")
    assert pid not in running()  # stopped, and waited for
    page.get_by_role("button", name="Remove an ops worker").click()  # the article's stay
    expect(page.locator("#message")).to_contain_text("the pool is down to ops1 and ops2")
    expect(page.locator('.process[data-name="ops2"]')).to_have_attribute("data-up", "up")


# ── Who may ask ─────────────────────────────────────────────────────────────


def ask(
    url: str,
    path: str,
    body: object = None,
    *,
    host: str | None = None,
    origin: str | None = None,
    token: str | None = None,
) -> tuple[int, Any]:
    """(status, JSON answer) of a request as any program, or another site, may send it."""
    address = url.removeprefix("http://").partition("/")[0]
    connection = http.client.HTTPConnection(address, timeout=WAIT)
    headers = {"Host": host or address, "Content-Type": "application/json"}
    if origin:
        headers["Origin"] = origin
    if token:
        headers["Cookie"] = f"resonator-web={token}"
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    connection.request("GET" if body is None else "POST", path, data, headers)
    answer = connection.getresponse()
    text = answer.read()
    connection.close()
    return answer.status, json.loads(text) if answer.getheader("Content-Type", "").startswith(
        "application/json"
    ) else text


def part(url: str, name: str) -> Any:
    """One part of what the page shows, as the page's stream sends it first."""
    address = url.removeprefix("http://").partition("/")[0]
    connection = http.client.HTTPConnection(address, timeout=WAIT)
    connection.request("GET", "/events")
    stream = connection.getresponse()
    try:
        event = ""
        for line in stream:
            if line.startswith(b"event: "):
                event = line.removeprefix(b"event: ").strip().decode()
            elif line.startswith(b"data: ") and event == name:
                return json.loads(line.removeprefix(b"data: "))
    finally:
        connection.close()
    raise AssertionError(f"the stream ended before {name}")


def test_another_site_or_another_host_name_cannot_compute_or_kill(url: str) -> None:
    own = url.rstrip("/")
    port = own.rsplit(":", 1)[1]
    worker = next(p for p in part(url, "processes") if p["name"] == "rhs" and p["up"])
    listed = len(part(url, "computations"))
    kill, sums = {"pid": worker["pid"]}, {"text": "1 + 2"}
    for origin in ("http://evil.example", f"http://localhost:{port}", "null", None):
        assert ask(url, "/kill", kill, origin=origin)[0] == 403
        assert ask(url, "/compute", sums, origin=origin)[0] == 403
        assert ask(url, "/play", {"name": "1"}, origin=origin)[0] == 403
    # A name of another site pointed at this address (DNS rebinding): its
    # requests are same-origin for the browser, and name that site as Host.
    rebound = f"evil.example:{port}"
    for path, body in (("/", None), ("/events", None), ("/kill", kill), ("/compute", sums)):
        assert ask(url, path, body, host=rebound, origin=f"http://{rebound}")[0] == 421
    # The page's own address and origin may; still, only its own processes.
    assert ask(url, "/kill", {"pid": os.getpid()}, origin=own) == (
        200,
        {"error": f"no process this page started runs with pid {os.getpid()}"},
    )
    after = {p["name"]: p for p in part(url, "processes")}
    assert after["rhs"]["pid"] == worker["pid"]
    assert after["rhs"]["up"]
    assert len(part(url, "computations")) == listed


def test_bad_input_gets_a_message_never_a_500(url: str) -> None:
    own = url.rstrip("/")
    for body in (b"{", b"[1, 2]", b"\xff\xfe", {"text": 3}, {"pid": "12"}, {"name": None}):
        for path in ("/compute", "/kill", "/start", "/pool", "/play"):
            status, answer = ask(url, path, body, origin=own)
            assert status in (200, 400), (path, body, status)
            assert set(answer) <= {"error", "id"}, answer
    assert ask(url, "/compute", b"1" * 100_000, origin=own)[0] == 413
    long = "1+" * 2500 + "1"
    status, answer = ask(url, "/compute", {"text": long}, origin=own)
    assert status == 200
    assert answer["error"].startswith("expression too long: 5001 characters")
    status, answer = ask(url, "/compute", {"text": "1 +\x00 2"}, origin=own)
    assert answer["error"].split("\n")[:2] == [
        "syntax error: unexpected character '\\x00': expected a number or '('",
        "  1 +\\x00 2",
    ]
    assert ask(url, "/start", {"name": "lhs; rm -rf /"}, origin=own) == (
        200,
        {"error": "lhs; rm -rf / is not a process this page starts"},
    )
    assert ask(url, "/play", {"name": "4"}, origin=own) == (
        200,
        {"error": "there is no scenario 4"},
    )
    assert ask(url, "/tree?id=a%3Ab")[0] == 400


# ── Attached, restarted, stopped ────────────────────────────────────────────


def test_attached_to_a_running_topology_it_computes_and_starts_nothing(
    browser: Browser, site: tuple[Process, str]
) -> None:
    server = site[0].wait_for(r"^the Resonate server: (\S+)$").group(1)
    # With a token: the address printed carries it, and nothing else gets in.
    attached, url = web("--url", server, "--token", "s3cret")
    try:
        own = url.partition("/?")[0]
        assert url == f"{own}/?token=s3cret"
        assert ask(own, "/")[0] == 401
        assert ask(own, "/?token=s3cre")[0] == 401
        assert ask(own, "/compute", {"text": "1 + 2"}, origin=own, token="s3cre")[0] == 401
        page = browser.new_page()
        problems = watch(page, own)
        page.goto(url)  # the token goes into a cookie, and out of the address bar
        assert page.url == f"{own}/"
        attached_to = f"Attached to the Resonate server at {server}"
        expect(page.locator("#server")).to_contain_text(attached_to)
        compute(page, "2 * (3 + 4)")
        expect(page.locator("#tree > li > .node")).to_have_attribute("data-state", "resolved")
        expect(page.locator("#computations li").first.locator(".value")).to_have_text("= 14")
        expect(page.locator(".process")).to_have_count(0)
        expect(page.locator("#scenarios")).to_be_hidden()
        expect(page.locator("#counts")).to_be_hidden()
        expect(page.locator("#pool")).to_be_hidden()
        assert problems == []
        page.close()
        assert ask(own, "/kill", {"pid": 1}, origin=own, token="s3cret")[0] == 409
    finally:
        stopped(attached)


def test_it_will_not_serve_beyond_loopback_without_a_token_nor_on_a_port_in_use(
    url: str,
) -> None:
    page = python("-m", "resonator.web.app")
    done = subprocess.run(
        [*page, "--host", "0.0.0.0"], capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert done.returncode == 2
    assert "will not serve on 0.0.0.0 without a token" in done.stderr
    port = url.rstrip("/").rsplit(":", 1)[1]
    done = subprocess.run(
        [*page, "--port", port], capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith(f"resonator-web: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in done.stderr


def test_the_page_ships_in_the_package(tmp_path: Path) -> None:
    """The page's files are in the wheel, as hatchling builds it, so an install has them."""
    subprocess.run(
        ["uv", "build", "--wheel", "--quiet", "-o", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=WAIT,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = {path.name for path in (ROOT / "resonator" / "web" / "static").iterdir()}
    assert {"index.html", "page.js", "page.css", "favicon.svg"} <= names
    assert {f"resonator/web/static/{name}" for name in names} <= set(ZipFile(wheel).namelist())


def test_the_page_reconnects_by_itself_and_ctrl_c_stops_everything(browser: Browser) -> None:
    port = str(free_port())
    first, url = web("--port", port)
    try:
        page = browser.new_page()
        page.goto(url)
        compute(page, "1 + 2")
        expect(page.locator("#computations li").first.locator(".value")).to_have_text("= 3")
        stops_with_everything_it_started(first, signal.SIGINT)
        expect(page.locator("#link")).to_have_attribute("data-state", "lost")
    finally:
        stopped(first)
    second, again = web("--port", port)
    try:
        assert again == url
        # The same page, not reloaded: live again, showing the new server's state.
        expect(page.locator("#link")).to_have_attribute("data-state", "live")
        expect(page.locator("#computations li")).to_have_count(0)
        compute(page, "2 + 3")
        expect(page.locator("#computations li").first.locator(".value")).to_have_text("= 5")
        page.close()
        stops_with_everything_it_started(second, signal.SIGTERM)
    finally:
        stopped(second)


def stopped(process: Process) -> None:
    """However a test ended: stopped as it stops what it started (SIGTERM), else killed."""
    try:
        if process.popen.poll() is None:
            stop(process)
    finally:
        process.kill()


def stops_with_everything_it_started(process: Process, sig: int) -> None:
    children = [pid for pid in running() if parent(pid) == process.popen.pid]
    assert len(children) >= 5  # the server and four workers, at least
    process.signal(sig)
    assert process.wait_closed() == 0
    assert [pid for pid in children if pid in running()] == []


def running() -> set[int]:
    """Every process that runs (a zombie does not)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "stat").read_text().rpartition(")")[2].split()[0] != "Z":
                    pids.add(int(entry.name))
            except OSError:
                continue  # it ended as we looked
    return pids


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except OSError:
        return 0
