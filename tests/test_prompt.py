"""The interactive ❯ prompt, driven through a real pseudo-terminal.

Two kinds of terminal: a dumb one (``TERM=dumb``), where the prompt is a
plain line that the terminal edits, and one that can be drawn on
(``TERM=xterm-256color``), where it is prompt_toolkit's. Keys go in as a
person types them: Ctrl-C is ``\\x03`` (a signal in a dumb terminal, a key
to prompt_toolkit), Ctrl-D is ``\\x04``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Self

import pyte
import pytest

from resonator.client.calculator import CONNECT_WAIT
from resonator.harness.processes import WAIT, Topology, free_port
from tests.helpers import available, balanced, first_logged, kill, leased, oracle

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

DRAWN = "xterm-256color"
COLUMNS, LINES = 100, 30


class Screen(pyte.Screen):
    """What a terminal shows; like a terminal, it answers when asked where its cursor is."""

    def __init__(self, fd: int) -> None:
        super().__init__(COLUMNS, LINES)
        self.fd = fd

    def write_process_input(self, data: str) -> None:
        os.write(self.fd, data.encode())


class Terminal:
    """``resonator ARGS`` with a pty as its controlling terminal, and the screen it draws."""

    def __init__(self, *args: str, term: str = "dumb", **env: str) -> None:
        self.fd, child = os.openpty()
        # setsid --ctty: a session of its own, with the pty as its terminal.
        self.process = subprocess.Popen(
            ["setsid", "--ctty", sys.executable, "-m", "resonator", *(args or ["--local"])],
            stdin=child,
            stdout=child,
            stderr=child,
            env={**os.environ, "TERM": term, "COLUMNS": str(COLUMNS), "LINES": str(LINES), **env},
        )
        os.close(child)
        self.screen = Screen(self.fd)
        self.stream = pyte.ByteStream(self.screen)
        self.printed = b""  # everything, as printed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WAIT)
        os.close(self.fd)

    @property
    def transcript(self) -> str:
        """Everything printed, as text (controls and all)."""
        return self.printed.decode(errors="replace")

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def type(self, keys: str) -> None:
        typed = keys.encode()
        while typed:  # a long line may go in a piece at a time
            typed = typed[os.write(self.fd, typed) :]

    def wait_until(self, what: str, shown: Callable[[], bool]) -> None:
        """Read what the program prints until ``shown()`` holds for the screen."""
        deadline = time.monotonic() + WAIT
        while not shown():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                raise AssertionError(
                    f"never showed {what}; the screen:\n" + "\n".join(self.lines())
                )
            try:
                printed = os.read(self.fd, 4096)
            except OSError:  # the process has gone and closed its side
                raise AssertionError(
                    f"exited before it showed {what}:\n{self.transcript}"
                ) from None
            self.printed += printed
            self.stream.feed(printed)

    def printed_times(self, text: str, times: int) -> None:
        """Once ``text`` was printed ``times`` times in all."""
        self.wait_until(f"{text!r} {times} times", lambda: self.transcript.count(text) >= times)

    def showing(self, text: str) -> str:
        """The screen, once ``text`` is on it."""
        self.wait_until(repr(text), lambda: text in "\n".join(self.lines()))
        return "\n".join(self.lines())

    def ready(self) -> str:
        """The screen, once a fresh ❯ waits for a line at the cursor."""
        cursor = self.screen.cursor
        self.wait_until("a fresh ❯", lambda: self.lines()[cursor.y] == "❯" and cursor.x == 2)
        return "\n".join(self.lines())

    def exit_status(self) -> int:
        status = self.process.wait(WAIT)
        with contextlib.suppress(AssertionError):  # read what it printed last
            self.wait_until("its end", lambda: False)
        return status


@pytest.fixture
def state(tmp_path: Path) -> dict[str, str]:
    """A state directory of its own, for the prompt's history."""
    return {"XDG_STATE_HOME": str(tmp_path)}


# ── Either terminal ─────────────────────────────────────────────────────────


@pytest.mark.parametrize("term", ["dumb", DRAWN])
def test_a_session_at_the_prompt(term: str, state: dict[str, str]) -> None:
    with Terminal(term=term, **state) as terminal:
        terminal.ready()
        terminal.type("(1 + 2) * (3 - 4)\r")
        screen = terminal.showing("= -3")
        assert "❯ (1 + 2) * (3 - 4)\n= -3\n" in screen
        assert "(1 + 2) * (3 - 4)" not in screen.splitlines()  # shown once, as typed
        terminal.ready()
        terminal.type("(1\r")
        assert "syntax error: '(' is never closed\n  (1\n  ^" in terminal.showing("^")
        terminal.ready()
        terminal.type(":tree\r")
        terminal.showing("resolved  -3")
        terminal.ready()
        terminal.type("\x04")  # Ctrl-D
        assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.transcript
    if term == "dumb":  # nothing but what the terminal can show as it is
        assert "promises settled" not in terminal.transcript


@pytest.mark.parametrize("term", ["dumb", DRAWN])
def test_ctrl_c_clears_the_line_and_stops_a_wait_but_never_quits(
    term: str, state: dict[str, str]
) -> None:
    with Terminal("--local", "-v", term=term, RESONATOR_OP_DELAY="30", **state) as terminal:
        terminal.ready()
        terminal.type("1 + (2")
        terminal.showing("❯ 1 + (2")
        terminal.type("\x03")  # Ctrl-C on a half-typed line
        terminal.ready()
        terminal.type("6 * 7\r")
        terminal.showing("embedded: * 6 7")  # the operator has started: the half line is gone
        terminal.type("\x03")  # Ctrl-C while it takes its time
        terminal.showing("stopped waiting; the computation goes on as ")
        terminal.ready()
        terminal.type(":tree\r")
        terminal.showing("pending")
        terminal.ready()
        terminal.type("\x03")  # Ctrl-C at an empty prompt
        terminal.ready()
        terminal.type(":q\r")
        assert terminal.exit_status() == 0
    assert "syntax error" not in terminal.transcript
    assert "Traceback" not in terminal.transcript


def test_ctrl_c_at_the_moment_the_prompt_appears_clears_it_every_time() -> None:
    # Sent as soon as "❯ " is on screen, when the prompt may not be reading
    # keys yet. Busy processes widen that gap, as a loaded machine does.
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    answers = []
    try:
        for _ in range(30):
            with Terminal() as terminal:
                terminal.ready()
                terminal.type("\x03")
                terminal.type("2 + 3\r")
                answers.append("= 5" in terminal.showing("= 5"))
                terminal.type("\x04")
                assert terminal.exit_status() == 0
                assert "Traceback" not in terminal.transcript
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert answers == [True] * 30


@pytest.mark.parametrize("term", ["dumb", DRAWN])
def test_a_server_out_of_reach_ends_the_prompt_at_once_before_it_is_drawn(term: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Terminal("-vv", "--url", url, term=term) as terminal:
        assert terminal.exit_status() == 1
    ended = time.time()
    said = terminal.transcript.strip().splitlines()
    assert said[-1] == f"resonator: cannot reach the Resonate server at {url} (connection refused)"
    assert "❯" not in terminal.transcript
    # Not after the seconds it would give a server that answers slowly.
    assert ended - first_logged(terminal.transcript) < CONNECT_WAIT


def test_a_computation_a_restarted_server_forgot_is_said_and_the_prompt_goes_on() -> None:
    # As docs/distributed.md says: the error, and the ❯ again (a batch exits 1).
    with Topology(RESONATOR_TTL="2") as topology:
        leased(topology)
        kill(topology["lhs"])  # so that the computation is still waiting
        with Terminal("--url", topology.url) as terminal:
            terminal.ready()
            terminal.type("(1 + 2) * (3 - 4)\r")
            topology["rhs"].wait_for(r"= 3 - 4  \[\w+:2\]$")
            kill(topology["server"])
            topology.server()  # same port, empty memory
            terminal.showing("error: the server no longer has computation ")
            terminal.ready()
            terminal.type("\x04")
            assert terminal.exit_status() == 0


def test_ctrl_c_while_waiting_for_a_server_gone_stops_the_wait_every_time() -> None:
    # Ctrl-C at a wait for a server that went away, 10 prompts with 5 waits
    # each. The prompt used to hang when Ctrl-C came just before its wait
    # began, or end with "cannot release un-acquired lock" when it came
    # inside the wait's lock handling.
    stopped = []
    with Topology() as topology:
        for _ in range(10):
            topology.server()
            with Terminal("--url", topology.url) as terminal:
                terminal.ready()
                kill(topology["server"])
                terminal.showing("cannot reach the Resonate server at")
                for n in range(1, 6):
                    terminal.ready()
                    terminal.type("1 + 2\r")
                    terminal.printed_times(f"waiting for the server at {topology.url} (Ctrl-C", n)
                    terminal.type("\x03")
                    terminal.printed_times("stopped waiting for the server; nothing was started", n)
                    stopped.append("Traceback" not in terminal.transcript)
                terminal.ready()
                terminal.type("\x04")
                assert terminal.exit_status() == 0
            assert terminal.transcript.count("cannot reach the Resonate server at") == 1
            assert "goes on as" not in terminal.transcript
    assert stopped == [True] * 50


@pytest.mark.parametrize("quit", [":q", ":quit"])
def test_quit_exit_and_help_say_what_to_do_and_q_quits(quit: str) -> None:
    with Terminal() as terminal:
        for word in ("quit", "exit"):
            terminal.ready()
            terminal.type(f"{word}\r")
            terminal.showing("Ctrl-D or :q quits")
        terminal.ready()
        terminal.type(":help\r")
        terminal.showing("  :q           quit")
        terminal.ready()
        terminal.type(f"{quit}\r")
        assert terminal.exit_status() == 0
    assert "syntax error" not in terminal.transcript
    assert "unknown command" not in terminal.transcript


def test_q_with_something_after_it_says_what_q_takes() -> None:
    with Terminal() as terminal:
        terminal.ready()
        terminal.type(":q now\r")
        terminal.showing(":q takes nothing after it: type :q alone to quit")
        terminal.ready()
        terminal.type(":quit\r")
        assert terminal.exit_status() == 0
    assert "unknown command" not in terminal.transcript


def test_what_is_typed_after_a_command_comes_back_escaped() -> None:
    # An escape sequence typed would otherwise reach the terminal as a command
    # to it (here: turn red; or set the window's title, or worse).
    with Terminal() as terminal:
        for typed, said in [
            (":tree \x1b[31mred", "error: there is no promise \\x1b[31mred"),
            (":watch \x1b]0;title\x07", "error: there is no promise \\x1b]0;title\\x07"),
            (":\x1b[31m", "unknown command :\\x1b[31m; :help lists the commands"),
        ]:
            terminal.ready()
            terminal.type(typed + "\r")
            terminal.printed_times(said, 1)
        terminal.ready()
        terminal.type("\x04")
        assert terminal.exit_status() == 0


def test_watch_returns_to_the_prompt_when_the_root_settles_and_on_ctrl_c() -> None:
    with Terminal("--local", RESONATOR_OP_DELAY="1") as terminal:
        terminal.ready()
        terminal.type("1 + 2\r")
        terminal.showing("= 3")
        terminal.ready()
        terminal.type(":watch\r")  # already settled: one picture, and back
        assert re.search(r"\+ 1 2 +ops +resolved +3", terminal.showing("+ 1 2"))
        terminal.ready()
        terminal.type("\x04")
        assert terminal.exit_status() == 0
    # A terminal that can redraw in place, for rich's live view.
    with Terminal("--local", "-v", term=DRAWN, RESONATOR_OP_DELAY="30") as terminal:
        terminal.ready()
        terminal.type("6 * 7\r")
        terminal.showing("embedded: * 6 7")
        terminal.type("\x03")  # stop waiting; the operator takes 30 s
        terminal.ready()
        terminal.type(":watch\r")
        terminal.wait_until(
            "its operator running",
            lambda: any(re.search(r" ops +pending +running$", line) for line in terminal.lines()),
        )
        terminal.type("\x03")  # stop watching
        terminal.showing("stopped watching; the computation goes on as ")
        terminal.ready()
        terminal.type("\x04")
        assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.transcript


# ── A terminal that can be drawn on ─────────────────────────────────────────


def test_what_the_client_says_appears_above_a_prompt_drawn_again(state: dict[str, str]) -> None:
    with Topology() as topology:
        topology.standard()
        with Terminal("--url", topology.url, term=DRAWN, **state) as terminal:
            terminal.ready()
            kill(topology["server"])  # said while the ❯ is drawn ...
            terminal.showing("cannot reach the Resonate server at")
            # ... above it: below that line a ❯ is drawn again.
            screen = terminal.ready().splitlines()
            said = next(row for row, line in enumerate(screen) if line.startswith("cannot reach"))
            assert said < terminal.screen.cursor.y
            topology.server()  # the same port, empty memory
            terminal.printed_times(f"connected to {topology.url}", 2)
            terminal.ready()
            terminal.type("1 + 2\r")  # and the prompt still works
            terminal.showing("= 3")
            terminal.ready()
            terminal.type("\x04")
            assert terminal.exit_status() == 0


def test_watch_follows_a_computation_on_either_server(server: str, state: dict[str, str]) -> None:
    with Topology(server, RESONATOR_OP_DELAY="1") as topology:
        topology.standard()
        topology.prompt("--id", "w", "(1 + 2) * (3 - 4)")  # another prompt's computation
        topology["lhs"].wait_for(r"\[w:1\]$")  # under way (the root dispatched its left operand)
        with Terminal("--url", topology.url, term=DRAWN, **state) as terminal:
            terminal.ready()
            terminal.type(":watch w\r")
            # Redrawn in place until the root settles; then the prompt is back.
            terminal.wait_until(
                "the settled tree",
                lambda: any(
                    re.search(r"= \(1 \+ 2\) \* \(3 - 4\) +root +resolved +-3$", line)
                    for line in terminal.lines()
                ),
            )
            terminal.ready()
            terminal.type("\x04")
            assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.transcript


def test_while_it_waits_the_prompt_shows_how_far_the_computation_is(state: dict[str, str]) -> None:
    with Terminal("--local", term=DRAWN, RESONATOR_OP_DELAY="1", **state) as terminal:
        terminal.ready()
        terminal.type("(1 + 2) * (3 - 4)\r")
        status = "promises settled (Ctrl-C stops waiting; the computation goes on)"
        waiting = terminal.showing(status)
        assert re.search(r"^\d+ of 10 promises settled", waiting, re.MULTILINE), waiting
        # It goes with the answer.
        assert status not in terminal.showing("= -3")
        terminal.ready()
        terminal.type("\x04")
        assert terminal.exit_status() == 0
    # Out of all ten the tree will have (README), from the first look on: a
    # count of those created so far would grow as the computation goes.
    shown = re.findall(r"(\d+) of (\d+) promises settled", terminal.transcript)
    assert shown, terminal.transcript
    assert {total for _, total in shown} == {"10"}, shown
    settled = [int(n) for n, _ in shown]
    assert settled == sorted(settled), shown


def test_tree_and_watch_say_each_state_in_the_same_words_and_fit_the_terminal() -> None:
    # Seven operators, 22 promises; the root's expression alone is 103 columns.
    n = [1234567890 + i for i in range(8)]
    long = f"(({n[0]} * {n[1]}) + ({n[2]} * {n[3]})) - (({n[4]} * {n[5]}) + ({n[6]} * {n[7]}))"
    with Terminal("--local", term=DRAWN) as terminal:
        terminal.ready()
        terminal.type(f"{long}\r")
        terminal.showing(f"= {oracle(long)}")
        first = re.compile(rf" root +resolved +{oracle(long)}$")
        last = re.compile(rf"^└── \S+:3 +- .* ops +resolved +{oracle(long)}$")
        for command in (":tree", ":watch"):
            terminal.ready()
            terminal.type("\x0c")  # Ctrl-L: a clean screen, the tree at its top
            terminal.type(f"{command}\r")
            terminal.wait_until(
                "the tree, from its first row to its last",
                lambda: (
                    any(map(first.search, terminal.lines()))
                    and any(map(last.search, terminal.lines()))
                ),
            )
            rows = "\n".join(terminal.lines())
            drawn = [line for line in rows.splitlines() if " resolved " in line]
            # Every row fits on one line of the 100 columns, the long ones
            # shortened, and says "resolved" and its value, as :tree does.
            assert len(drawn) == 22, rows
            assert all(re.search(r" resolved +-?\d+$", line) for line in drawn), rows
            assert "…" in drawn[0], rows
        terminal.ready()
        terminal.type("\x04")
        assert terminal.exit_status() == 0


def test_a_tree_bigger_than_the_screen_is_folded_to_fit_it() -> None:
    text = balanced(5)  # 31 operators, 94 promises: more than the screen's 30 lines
    heading = re.compile(r"^94 promises, 94 settled: folded into (\d+) rows$")
    with Terminal("--local", term=DRAWN) as terminal:
        terminal.ready()
        terminal.type(f"{text}\r")
        terminal.showing(f"= {oracle(text)}")
        for command in (":tree", ":watch"):
            terminal.ready()
            terminal.type("\x0c")  # Ctrl-L: a clean screen, the tree at its top
            terminal.type(f"{command}\r")
            terminal.wait_until(
                "the folded tree, from the line above it to its last row",
                lambda: (
                    any(map(heading.match, terminal.lines()))
                    and any(line.startswith("└── ") for line in terminal.lines())
                ),
            )
            screen = terminal.lines()
            top = next(row for row, line in enumerate(screen) if heading.match(line))
            match = heading.match(screen[top])
            assert match
            drawn = screen[top + 1 : top + 1 + int(match.group(1))]
            # All on the screen, one line a row, each saying "resolved"; some fold many.
            assert drawn[-1].startswith("└── "), screen
            assert all(" resolved " in line for line in drawn), screen
            assert any(re.search(r" resolved +-?\d+ +\+\d+ folded$", line) for line in drawn)
        terminal.ready()
        terminal.type("\x04")
        assert terminal.exit_status() == 0


def test_a_syntax_error_shows_in_the_toolbar_before_enter(state: dict[str, str]) -> None:
    with Terminal(term=DRAWN, **state) as terminal:
        terminal.ready()
        terminal.type("(1 +")
        terminal.showing(" column 5: expected a number or '(' at the end")
        terminal.type(" 2)")
        terminal.wait_until("the toolbar", lambda: " Enter computes it" in terminal.lines())
        terminal.type("\x15x * 2")  # Ctrl-U clears the line
        terminal.showing(" column 1: unexpected character 'x': expected a number or '('")
        terminal.type("\r")  # Enter on it all the same: the caret, as ever
        terminal.showing("syntax error: unexpected character 'x'")
        terminal.ready()
        terminal.type("\x04")
        assert terminal.exit_status() == 0


def test_history_is_kept_between_sessions(state: dict[str, str]) -> None:
    with Terminal(term=DRAWN, **state) as terminal:
        terminal.ready()
        terminal.type("6 * 7\r")
        terminal.showing("= 42")
        terminal.ready()
        terminal.type("\x04")
        assert terminal.exit_status() == 0
    with Terminal(term=DRAWN, **state) as terminal:
        terminal.ready()
        terminal.type("\x1b[A")  # Up: the last line of the last session
        terminal.showing("❯ 6 * 7")
        terminal.type("\r")
        terminal.showing("= 42")
        terminal.ready()
        terminal.type("\x04")
        assert terminal.exit_status() == 0


def test_history_keeps_no_line_too_long_and_only_the_last_thousand(state: dict[str, str]) -> None:
    kept = Path(state["XDG_STATE_HOME"]) / "resonator" / "history"
    kept.parent.mkdir(parents=True)
    kept.write_text("".join(f"\n# earlier\n+{n} + 1\n" for n in range(1500)))
    with Terminal(term=DRAWN, **state) as terminal:
        terminal.ready()
        terminal.type("1" * 5000 + "\r")
        terminal.showing("expression too long: 5000 characters (the limit is 4000)")
        terminal.ready()
        terminal.type("\x04")
        assert terminal.exit_status() == 0
    lines = [line for line in kept.read_text().splitlines() if line.startswith("+")]
    assert lines == [f"+{n} + 1" for n in range(500, 1500)]


def test_a_server_that_refuses_the_sdks_ids_ends_the_prompt_before_it_is_drawn() -> None:
    with Topology(available("resonate-0.9.8")) as topology:
        topology.server()
        with Terminal("--url", topology.url, term=DRAWN) as terminal:
            assert terminal.exit_status() == 1
        said = [line for line in terminal.lines() if "refuses" in line]
    assert said[0].startswith(f"resonator: the Resonate server at {topology.url} refuses ")
    assert "❯" not in terminal.transcript  # nothing typed goes to a prompt about to go


def test_a_server_that_refuses_the_token_ends_the_prompt_before_it_is_drawn() -> None:
    with Topology(RESONATE_TOKEN=secrets.token_urlsafe(16)) as topology:
        topology.server()  # which asks for the token; the prompt has none
        with Terminal("--url", topology.url, term=DRAWN, RESONATE_TOKEN="") as terminal:
            assert terminal.exit_status() == 1
    assert terminal.transcript.strip() == (
        f"resonator: the Resonate server at {topology.url} refused this process, "
        "which has no token (set RESONATE_TOKEN)"
    )
