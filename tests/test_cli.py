"""The command line, as a user runs it: real subprocesses, embedded mode."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from resonator.client.calculator import CONNECT_WAIT
from resonator.harness.processes import free_port
from tests.helpers import first_logged

README_LINES = "(1 + 2) * (3 - 4)\n1 + 2 * 3\n8 - 3 - 2\n-(2 + 3) * 4\n"  # piped in the README


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("GRP", "PID", "RESONATE_URL")}


def resonator(*args: str, stdin: str = "", **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resonator", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=clean_environment() | settings,
        timeout=60,
        check=False,
    )


def test_piped_lines_print_one_value_each() -> None:
    done = resonator("--local", stdin=README_LINES)
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


def test_bad_lines_do_not_stop_the_rest_and_say_which_line_they_are() -> None:
    done = resonator("--local", stdin="1 +\n2 * 3\n\n1 / 2\n4 - 5\n")
    assert (done.returncode, done.stdout) == (1, "6\n-1\n")
    said = [line for line in done.stderr.splitlines() if "syntax error" in line]
    assert said == [
        "line 1: syntax error: expected a number or '(' at the end",
        "line 4: syntax error: unexpected character '/': use +, - or *",
    ]
    assert "Traceback" not in done.stderr


def test_trace_lines_only_with_verbose() -> None:
    quiet = resonator("--local", "1 + 2")
    loud = resonator("--local", "-v", "1 + 2")
    assert quiet.stdout == loud.stdout == "3\n"
    assert "+ 1 2" not in quiet.stderr
    assert "embedded: + 1 2" in loud.stderr
    assert "embedded: = 1 + 2" in loud.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--local", "--url", "http://127.0.0.1:1"], "argument --url: not allowed with"),
        (["--id", "x", "1", "2"], "--id names one invocation: give exactly one EXPR with it"),
        (["--id", "x"], "--id names one invocation: give exactly one EXPR with it"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--jobs", "0", "1"], "argument -j/--jobs: a whole number above 0, not '0'"),
        (["--id", "", "1"], "--id takes 1 to 100 printable ASCII characters, without"),
        (["--url", "ftp://x", "1"], "--url must start with http://, https://, postgresql://"),
        (["--jobs", "-1", "1"], "argument -j/--jobs: a whole number above 0, not '-1'"),
        (["--url", "http://[::1", "1"], "--url is no URL (Invalid IPv6 URL): 'http://[::1'"),
    ],
)
def test_bad_usage_is_one_line_and_exits_2(args: list[str], said: str) -> None:
    done = resonator(*args)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"resonator: {said}"), done.stderr


@pytest.mark.parametrize(
    ("program", "args"),
    [
        ("resonator.servers.devserver", ["--port", "x"]),
        ("resonator.servers.devserver", ["--port", "99999"]),
        ("resonator.servers.devserver", ["--port", "-1"]),
        ("resonator.servers.devserver", ["--tasks-retry-timeout", "-5"]),
        ("resonator.servers.devserver", ["--request-timeout", "-1"]),
        ("resonator.servers.devserver", ["--request-timeout", "nan"]),
        ("resonator.servers.postgres", ["--keep", "0"]),
        ("resonator.servers.postgres", ["--port", "70000"]),
        ("resonator.terminal.demo", ["9"]),
        ("resonator.terminal.demo", ["--pictures", "/proc/no/such/folder", "1"]),
        ("resonator.web.app", ["--nonsense"]),
        ("resonator.web.app", ["--port", "99999"]),
    ],
)
def test_every_program_says_bad_usage_in_one_line(program: str, args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", program, *args],
        capture_output=True,
        text=True,
        env=clean_environment(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("resonator-"), done.stderr


@pytest.mark.parametrize("id", ["a:b", "x" * 101, "x" * 9000, "a b", "é", "\t"])
def test_an_id_that_cannot_be_an_id_is_a_usage_error(id: str) -> None:
    done = resonator("--local", "--id", id, "1 + 1")
    assert done.returncode == 2
    assert done.stderr == (
        "resonator: --id takes 1 to 100 printable ASCII characters, without ':' or spaces\n"
    )


def test_the_longest_id_works() -> None:
    done = resonator("--local", "--id", "x" * 100, "1 + 1")
    assert (done.returncode, done.stdout) == (0, "2\n")


@pytest.mark.parametrize(
    ("text", "value"), [("-5+3", "-2"), ("-(2+3)*4", "-20"), ("---1", "-1"), ("- 4", "-4")]
)
def test_an_expression_may_start_with_a_minus(text: str, value: str) -> None:
    done = resonator("--local", "-v", text, "--id", "neg")
    assert (done.returncode, done.stdout) == (0, f"{value}\n"), done.stderr
    assert "neg" in done.stderr  # the options around it still count


def test_syntax_errors_show_control_characters_escaped() -> None:
    done = resonator("--local", stdin="1 + \x00\x1b[31m\n")
    assert done.stderr.splitlines()[1:] == [
        "line 1: syntax error: unexpected character '\\x00': expected a number or '('",
        "  1 + \\x00\\x1b[31m",
        "      ^",
    ]


def test_the_caret_stands_under_the_character_after_tabs() -> None:
    done = resonator("--local", stdin="1\t\t+ x\n")
    echo, caret = done.stderr.splitlines()[2:4]
    assert "\t" not in echo
    assert echo[caret.index("^")] == "x"


def test_a_long_input_is_shown_as_a_window_around_the_error() -> None:
    text = " + ".join(["1"] * 400) + " + x + " + " + ".join(["2"] * 400)
    done = resonator("--local", text)
    shown, echo, caret = done.stderr.splitlines()[1:4]
    assert shown == "syntax error: unexpected character 'x': expected a number or '('"
    assert len(echo) < 80
    assert len(caret) < 80
    assert echo.startswith("  …")
    assert echo.endswith("…")
    assert echo[caret.index("^")] == "x"


def test_an_input_too_long_to_read_says_the_limit_and_shows_no_caret() -> None:
    done = resonator("--local", "1 + " * 1250)
    assert done.returncode == 1
    assert done.stderr.splitlines()[1:] == [
        "expression too long: 5000 characters (the limit is 4000)"
    ]


def test_line_endings_a_byte_order_mark_and_a_line_that_is_not_utf8() -> None:
    piped = "\ufeff1 + 2\r3 * 4\r\n".encode() + b"\xff\xfe 5\n5 - 1\n"
    done = subprocess.run(
        [sys.executable, "-m", "resonator", "--local"],
        input=piped,
        capture_output=True,
        env={**clean_environment(), "LC_ALL": "C", "PYTHONUTF8": "0"},
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, b"3\n12\n4\n")
    assert done.stderr.splitlines()[1:] == [b"line 3: not UTF-8 text; skipped"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"GRP": "foo"}, "resonator: GRP must be exp or ops, not 'foo'"),
        ({"GRP": "exp", "PID": "x"}, "resonator: an exp worker's PID must be lhs or rhs, not 'x'"),
        ({"GRP": "exp"}, "resonator: an exp worker needs a PID: PID=lhs or PID=rhs"),
        *(
            (
                {"GRP": "ops", "PID": pid},
                "resonator: a worker's PID must be 1 to 64 letters, digits, '-' or '_', "
                f"not {pid!r}",
            )
            for pid in ["a/b", "%2e%2e", "a b", "x\x1b[31m", "p" * 65, "é", "a:b"]
        ),
        (
            {"RESONATOR_TTL": "soon"},
            "resonator: RESONATOR_TTL must be a number of seconds, not 'soon'",
        ),
        (
            {"RESONATOR_OP_DELAY": "-1"},
            "resonator: RESONATOR_OP_DELAY must not be negative, not '-1'",
        ),
        (
            {"RESONATOR_EXP_DELAY": "nan"},
            "resonator: RESONATOR_EXP_DELAY must be under a million seconds, not 'nan'",
        ),
    ],
)
def test_a_bad_setting_is_one_line_and_a_usage_error(
    settings: dict[str, str], message: str
) -> None:
    done = resonator(**settings)
    assert (done.returncode, done.stderr) == (2, message + "\n")


def test_help_lists_the_environment() -> None:
    done = resonator("--help")
    assert done.returncode == 0
    for variable in (
        "GRP",
        "PID",
        "RESONATE_URL",
        "RESONATOR_TTL",
        "RESONATOR_SLOTS",
        "RESONATOR_OP_DELAY",
    ):
        assert f"\n  {variable} " in done.stdout
    assert "(default: the\n                      SDK's, 64)" in done.stdout


@pytest.mark.parametrize(
    ("args", "settings", "said"),
    [
        (["--slots", "0", "1"], {}, "argument --slots: a whole number above 0, not '0'"),
        (["1"], {"RESONATOR_SLOTS": "x"}, "RESONATOR_SLOTS must be a whole number above 0"),
    ],
)
def test_slots_take_a_whole_number_above_zero(
    args: list[str], settings: dict[str, str], said: str
) -> None:
    done = resonator("--local", *args, **settings)
    assert (done.returncode, done.stdout) == (2, "")
    assert said in done.stderr


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"http://127.0.0.1:{free_port()}", "connection refused"),
        ("http://nosuchhost.invalid:8001", "no such host"),
        (f"postgresql://postgres@127.0.0.1:{free_port()}/resonate", "connection refused"),
    ],
)
def test_a_server_that_is_not_there_is_said_at_once_with_why(url: str, why: str) -> None:
    done = resonator("-vv", "--url", url, "1 + 2")
    ended = time.time()
    assert (done.returncode, done.stdout) == (1, "")
    said = done.stderr.splitlines()
    assert said[-1] == f"resonator: cannot reach the Resonate server at {url} ({why})"
    assert not any(line.startswith("resonator: ") for line in said[:-1]), said
    # Not after the seconds it would give a server that answers slowly.
    assert ended - first_logged(done.stderr) < CONNECT_WAIT


@pytest.mark.parametrize("url", ["http://", "https://:8001", "http:///x"])
def test_a_url_without_a_host_is_a_usage_error(url: str) -> None:
    done = resonator("--url", url, "1 + 2")
    assert done.returncode == 2
    assert done.stderr == f"resonator: --url names no host: {url!r}\n"


def test_a_reader_that_stops_reading_ends_it_quietly() -> None:
    # As `resonator ... | head -1` does: our end of the pipe is closed before it writes.
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as stdout:
        done = subprocess.run(
            [sys.executable, "-m", "resonator", "--local", "1 + 1", "2 + 2"],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_environment(),
            timeout=60,
            check=False,
        )
    assert done.stderr == "embedded: no Resonate server, running everything in this process\n"
    assert done.returncode == 141  # as if SIGPIPE had ended it, as it ends most programs


def test_an_empty_expression_given_is_an_error_in_one_line() -> None:
    done = resonator("--local", "", "1 + 1", " \t ")
    assert (done.returncode, done.stdout) == (1, "2\n")
    assert done.stderr.splitlines()[1:] == ["syntax error: empty expression"] * 2


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:99999",
        "http://127.0.0.1:0",
        "https://localhost:8x01",
        "postgresql://postgres@127.0.0.1:70000/resonate",
    ],
)
def test_a_url_whose_port_cannot_be_is_a_usage_error_that_names_it(url: str) -> None:
    given: list[tuple[list[str], dict[str, str], str]] = [
        (["--url", url], {}, "--url"),
        ([], {"RESONATE_URL": url}, "RESONATE_URL"),
    ]
    for args, env, named in given:
        done = resonator(*args, "1 + 2", **env)
        assert (done.returncode, done.stderr) == (
            2,
            f"resonator: {named} names no port a server can listen on (1 to 65535): {url!r}\n",
        )


def test_a_real_server_not_on_path_is_said_with_how_to_put_it_there() -> None:
    # Only the directory of this Python on PATH: no `resonate` there.
    env = clean_environment() | {"PATH": os.path.dirname(sys.executable)}
    for program in ("resonator.web.app", "resonator.terminal.demo"):
        done = subprocess.run(
            [sys.executable, "-m", program, "--server", "resonate"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2
        assert done.stderr.endswith(
            ": no real Resonate server: `resonate` is not on PATH; put the directory that "
            "holds it on PATH (docs/servers.md says which build works)\n"
        ), done.stderr


@pytest.mark.parametrize("text", ["", "((((", ")", "1 +* 2", "\x00", "9" * 5000, "é", "1.5"])
def test_nonsense_never_shows_a_traceback(text: str) -> None:
    done = resonator("--local", stdin=text + "\n1\n")
    assert done.stdout == "1\n"
    assert "Traceback" not in done.stderr


def test_watch_piped_prints_a_snapshot_each_time_the_tree_changes() -> None:
    done = resonator(
        "--local", "--watch", "--id", "w", "(1 + 2) * (3 - 4)", RESONATOR_OP_DELAY="0.3"
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    snapshots = [s for s in done.stdout.split("\n\n") if s.strip()]
    assert len(snapshots) >= 2
    assert any(" pending " in snapshot for snapshot in snapshots[:-1])
    last = snapshots[-1].splitlines()
    assert last[0].split() == [
        "w",
        "=",
        "(1",
        "+",
        "2)",
        "*",
        "(3",
        "-",
        "4)",
        "root",
        "resolved",
        "-3",
    ]
    assert len(last) == 10


def test_watch_follows_an_existing_computation_by_id() -> None:
    done = resonator("--local", "--watch", "--id", "nothing-here")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines()[-1] == "error: there is no promise nothing-here"


@pytest.mark.parametrize(
    ("url", "named"),
    [("foo://bar", "--url"), ("localhost:8001", "--url"), ("127.0.0.1", "RESONATE_URL")],
)
def test_a_url_of_no_known_scheme_is_a_usage_error_at_once(url: str, named: str) -> None:
    args, env = (["--url", url], {}) if named == "--url" else ([], {"RESONATE_URL": url})
    done = resonator(*args, "1 + 2", **env)
    assert done.returncode == 2
    assert done.stderr == (
        f"resonator: {named} must start with http://, https://, postgresql:// or "
        f"postgres://: {url!r}\n"
    )


def test_a_worker_shows_a_long_expression_as_a_window() -> None:
    text = " + ".join(str(n) for n in range(1, 180))
    done = resonator("--local", "-v", text)
    assert done.stdout == f"{sum(range(1, 180))}\n"
    root = next(line for line in done.stderr.splitlines() if line.startswith("embedded: = 1 + 2"))
    assert root == (
        f"embedded: {('= ' + text)[:30]}…{text[-30:]} ({len(text) + 2} characters)  "
        f"[{root.rsplit('[', 1)[1]}"
    )


@pytest.mark.parametrize(
    ("command", "said"),
    [
        ("resonator.servers.postgres", r"\n  --port PORT +the port Postgres listens on"),
        (
            "resonator.terminal.demo",
            r"\n  2  the ops worker running \+ 1 2 dies in the middle of it",
        ),
    ],
)
def test_help_says_what_each_argument_is(command: str, said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert re.search(said, done.stdout), done.stdout
