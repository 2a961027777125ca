"""The interactive ❯ prompt, driven through a real pseudo-terminal."""

from __future__ import annotations

import codecs
import os
import re
import select
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Self

from resonator.harness.processes import WAIT, free_port

if TYPE_CHECKING:
    from types import TracebackType


class Terminal:
    """``resonator --local`` with a pty as its controlling terminal.

    Keys go in as a person types them: Ctrl-C is ``\\x03``, which the
    terminal turns into SIGINT, and Ctrl-D is ``\\x04``.
    """

    def __init__(self, *args: str, **env: str) -> None:
        self.fd, child = os.openpty()
        # setsid --ctty: a session of its own, with the pty as its terminal.
        self.process = subprocess.Popen(
            ["setsid", "--ctty", sys.executable, "-m", "resonator", *(args or ["--local"])],
            stdin=child,
            stdout=child,
            stderr=child,
            env={**os.environ, "TERM": "dumb", **env},
        )
        os.close(child)
        # A read can end inside a character (❯ is three bytes): decode across reads.
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.screen = ""  # what has not been waited for yet
        self.transcript = ""  # everything

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

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait_for(self, text: str) -> str:
        """Everything on screen up to ``text``, once it has been printed."""
        deadline = time.monotonic() + WAIT
        while text not in self.screen:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                raise AssertionError(f"never printed {text!r}; the screen:\n{self.screen}")
            try:
                printed = self.decoder.decode(os.read(self.fd, 4096))
                self.screen += printed
                self.transcript += printed
            except OSError:  # the process has gone and closed its side
                raise AssertionError(f"exited before {text!r}:\n{self.screen}") from None
        shown, _, self.screen = self.screen.partition(text)
        return shown + text

    def exit_status(self) -> int:
        return self.process.wait(WAIT)


def test_a_session_at_the_prompt() -> None:
    with Terminal() as terminal:
        terminal.wait_for("❯ ")
        terminal.type("(1 + 2) * (3 - 4)\r")
        assert "(1 + 2) * (3 - 4)\r\n= -3" in terminal.wait_for("❯ ")
        terminal.type("(1\r")
        screen = terminal.wait_for("❯ ")
        assert "syntax error: '(' is never closed\r\n  (1\r\n  ^" in screen
        terminal.type(":tree\r")
        assert "resolved  -3" in terminal.wait_for("❯ ")
        terminal.type("\x04")  # Ctrl-D
        assert terminal.exit_status() == 0
        assert "Traceback" not in terminal.screen


def test_ctrl_c_stops_waiting_then_quits() -> None:
    with Terminal("--local", "-v", RESONATOR_OP_DELAY="30") as terminal:
        terminal.wait_for("❯ ")
        terminal.type("6 * 7\r")
        terminal.wait_for("embedded: * 6 7")  # the operator has started
        terminal.type("\x03")  # Ctrl-C while it takes its time
        screen = terminal.wait_for("❯ ")
        assert "stopped waiting; the computation goes on as " in screen
        terminal.type(":tree\r")
        assert "pending" in terminal.wait_for("❯ ")
        terminal.type("\x03")  # Ctrl-C at the prompt
        assert terminal.exit_status() == 0
        assert "Traceback" not in terminal.screen


def test_ctrl_c_at_the_moment_the_prompt_appears_quits_every_time() -> None:
    # Sent as soon as "❯ " is on screen, when readline may not be waiting for
    # keys yet. Busy processes widen that gap, as a loaded machine does.
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    statuses = []
    try:
        for _ in range(30):
            with Terminal() as terminal:
                terminal.wait_for("❯ ")
                terminal.type("\x03")
                statuses.append(terminal.exit_status())
                assert "Traceback" not in terminal.screen
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert statuses == [0] * 30


def test_a_server_out_of_reach_is_said_once_and_ctrl_c_claims_nothing() -> None:
    with Terminal("--url", f"http://127.0.0.1:{free_port()}") as terminal:
        terminal.wait_for("❯ ")
        terminal.type("1 + 2\r")
        terminal.wait_for("(Ctrl-C stops waiting)")
        terminal.type("\x03")
        screen = terminal.wait_for("❯ ")
        assert "stopped waiting for the server; nothing was started" in screen
        assert "goes on" not in screen
        terminal.type("\x04")
        assert terminal.exit_status() == 0
    assert terminal.transcript.count("cannot reach the Resonate server at") == 1
    assert "Traceback" not in terminal.transcript


def test_ctrl_c_while_waiting_stops_the_wait_every_time() -> None:
    # Ctrl-C at a new prompt's first wait, 50 times. The prompt used to hang
    # when Ctrl-C came just before its wait began, or end with "cannot
    # release un-acquired lock" when it came inside the wait's lock handling:
    # a few times in a hundred, and this failed three runs in three. (Busy
    # processes, unlike in the test above, made it rarer.)
    stopped = []
    for _ in range(50):
        with Terminal("--url", f"http://127.0.0.1:{free_port()}") as terminal:
            terminal.wait_for("❯ ")
            terminal.type("1 + 2\r")
            terminal.wait_for("(Ctrl-C stops waiting)")
            terminal.type("\x03")
            screen = terminal.wait_for("❯ ")
            stopped.append("nothing was started" in screen and "Traceback" not in screen)
            terminal.type("\x04")
            assert terminal.exit_status() == 0
    assert stopped == [True] * 50


def test_quit_exit_and_help_say_what_to_do() -> None:
    with Terminal() as terminal:
        terminal.wait_for("❯ ")
        for word in ("quit", "exit"):
            terminal.type(f"{word}\r")
            assert "Ctrl-D quits" in terminal.wait_for("❯ ")
        terminal.type(":help\r")
        assert ":tree [ID]" in terminal.wait_for("❯ ")
        terminal.type("\x04")
        assert terminal.exit_status() == 0
    assert "syntax error" not in terminal.transcript


def test_watch_returns_to_the_prompt_when_the_root_settles_and_on_ctrl_c() -> None:
    with Terminal("--local", RESONATOR_OP_DELAY="1") as terminal:
        terminal.wait_for("❯ ")
        terminal.type("1 + 2\r")
        assert "= 3" in terminal.wait_for("❯ ")
        terminal.type(":watch\r")  # already settled: one picture, and back
        picture = terminal.wait_for("❯ ")
        assert re.search(r"\+ 1 2 +ops +resolved +3", picture), picture
        terminal.type("\x03")  # at the prompt: quits
        assert terminal.exit_status() == 0
    # A terminal that can redraw in place, for rich's live view.
    with Terminal("--local", "-v", RESONATOR_OP_DELAY="30", TERM="xterm-256color") as terminal:
        terminal.wait_for("❯ ")
        terminal.type("6 * 7\r")
        terminal.wait_for("embedded: * 6 7")
        terminal.type("\x03")  # stop waiting; the operator takes 30 s
        terminal.wait_for("❯ ")
        terminal.type(":watch\r")
        terminal.wait_for("running")
        terminal.type("\x03")  # stop watching
        screen = terminal.wait_for("❯ ")
        assert "stopped watching; the computation goes on as " in screen
        terminal.type("\x04")
        assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.transcript
