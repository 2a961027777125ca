"""The command line, as a user runs it: real subprocesses, embedded mode."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ARTICLE = "(1 + 2) * (3 - 4)\n1 + 2 * 3\n8 - 3 - 2\n-(2 + 3) * 4\n"


def resonator(*args: str, stdin: str = "", **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GRP", "PID", "RESONATE_URL")}
    env |= settings
    return subprocess.run(
        [sys.executable, "-m", "resonator", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_piped_lines_print_one_value_each() -> None:
    done = resonator("--local", stdin=ARTICLE)
    assert (done.returncode, done.stdout) == (0, "-3\n7\n3\n-20\n")
    assert done.stderr.startswith("embedded: no Resonate server")


def test_arguments_are_evaluated_in_order() -> None:
    done = resonator("--local", "2 * 3", "-4", "123456789012345678901234567890 + 1")
    assert (done.returncode, done.stdout) == (0, "6\n-4\n123456789012345678901234567891\n")


def test_a_syntax_error_shows_a_caret_and_fails() -> None:
    done = resonator("--local", "(1 +")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines()[1:] == [
        "syntax error: expected a number or '(' at the end",
        "  (1 +",
        "      ^",
    ]


def test_bad_lines_do_not_stop_the_rest() -> None:
    done = resonator("--local", stdin="1 +\n2 * 3\n\n1 / 2\n4 - 5\n")
    assert (done.returncode, done.stdout) == (1, "6\n-1\n")
    assert done.stderr.count("syntax error") == 2
    assert "Traceback" not in done.stderr


def test_trace_lines_only_with_verbose() -> None:
    quiet = resonator("--local", "1 + 2")
    loud = resonator("--local", "-v", "1 + 2")
    assert quiet.stdout == loud.stdout == "3\n"
    assert "+ 1 2" not in quiet.stderr
    assert "embedded: + 1 2" in loud.stderr
    assert "embedded: = 1 + 2" in loud.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--local", "--url", "http://127.0.0.1:1"],
        ["--id", "x", "1", "2"],
        ["--id", "x"],
        ["--no-such-flag"],
    ],
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    done = resonator(*args)
    assert done.returncode == 2
    assert "usage:" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_id_that_cannot_be_an_id_is_one_clean_line() -> None:
    done = resonator("--local", "--id", "a:b", "1 + 1")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("error: ")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("text", ["", "((((", ")", "1 +* 2", "\x00", "9" * 5000, "é", "1.5"])
def test_nonsense_never_shows_a_traceback(text: str) -> None:
    done = resonator("--local", stdin=text + "\n1\n")
    assert done.stdout == "1\n"
    assert "Traceback" not in done.stderr


def test_a_bad_setting_is_one_clean_line() -> None:
    done = resonator("--local", "1 + 1", RESONATOR_TTL="soon")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "resonator: RESONATOR_TTL must be a number of seconds, not 'soon'"
    )
