"""Bad input at scale: the parser, the command line and the stand-in's HTTP."""

from __future__ import annotations

import contextlib
import json
import random
import re
import resource
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from resonator.harness.processes import WAIT, Topology
from resonator.parser import MAX_LENGTH, ParseError, TooLarge, parse, render
from tests.helpers import ask, envelope, oracle

if TYPE_CHECKING:
    from collections.abc import Iterator

VALID = [
    "(1 + 2) * (3 - 4)",
    "1 + 2 * 3",
    "8 - 3 - 2",
    "-(2 + 3) * 4",
    "((1 + 2) * (3 - 4)) - ((5 * 6) + (7 - -8)) * 2",
    "123456789012345678901234567890 * -987654321",
]
ALPHABET = "0123456789+-*/() \t.x**eé٣\x00\\'\"[]{}^%"


def inputs(seed: int, count: int, max_length: int = MAX_LENGTH + 10) -> Iterator[str]:
    """Random characters, truncated and mutated valid expressions, long and deep ones."""
    rng = random.Random(seed)
    for i in range(count):
        match i % 5:
            case 0:
                yield "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
            case 1:
                text = rng.choice(VALID)
                yield text[: rng.randint(0, len(text))]
            case 2:
                chars = list(rng.choice(VALID))
                for _ in range(rng.randint(1, 4)):
                    spot = rng.randrange(len(chars) + 1)
                    match rng.randrange(3):
                        case 0:
                            chars.insert(spot, rng.choice(ALPHABET))
                        case 1 if spot < len(chars):
                            del chars[spot]
                        case _ if spot < len(chars):
                            chars[spot] = rng.choice(ALPHABET)
                yield "".join(chars)
            case 3:  # parentheses as deep as fit, which add nothing to the tree's depth
                depth = rng.randint(0, (MAX_LENGTH - 50) // 2)
                yield "(" * depth + rng.choice(VALID) + ")" * rng.randint(depth - 1, depth + 1)
            case _:
                terms = rng.randint(1, max_length // 4)
                yield " ".join(f"{rng.randint(0, 999)} {rng.choice('+-*')}" for _ in range(terms))[
                    : rng.randint(1, max_length)
                ]


def test_ten_thousand_inputs_parse_or_fail_with_a_column() -> None:
    parsed = failed = 0
    for text in inputs(seed=1, count=10_000):
        try:
            tree = parse(text)
        except ParseError as error:
            # Every error has a column, but a refusal of a text too large.
            if len(text) > MAX_LENGTH:
                assert isinstance(error, TooLarge), (text, error.message)
            if isinstance(error, TooLarge):
                assert error.column is None, (text, error.column)
            else:
                assert error.column is not None and 0 <= error.column <= len(text), error.column
            assert "\n" not in error.message
            failed += 1
        else:
            assert parse(render(tree)) == tree
            parsed += 1
    # Both outcomes are well represented, so neither path goes untested.
    assert parsed > 1000
    assert failed > 1000


def test_the_command_line_answers_every_line_with_a_value_or_an_error() -> None:
    lines = [t.replace("\x00", "") for t in inputs(seed=2, count=300, max_length=80)]
    lines = [t for t in lines if t.strip()]  # blank lines are skipped, not answered
    expected: list[str] = []
    for text in lines:
        with contextlib.suppress(ParseError):  # an error is expected on stderr instead
            expected.append(str(oracle(render(parse(text)))))
    done = subprocess.run(
        [sys.executable, "-m", "resonator", "--local"],
        input="".join(f"{t}\n" for t in lines),
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
        check=False,
    )
    assert done.stdout.splitlines() == expected
    assert done.stderr.count("syntax error: ") == len(lines) - len(expected)
    assert "Traceback" not in done.stderr
    assert done.returncode == (1 if len(expected) < len(lines) else 0)


# ── Malformed requests to the stand-in ──────────────────────────────────────


@pytest.fixture(scope="module")
def running() -> Iterator[Topology]:
    with Topology() as topology:
        yield topology.standard()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"", 400),
        (b"[]", 400),
        (b'"just a string"', 400),
        (json.dumps({"kind": "promise.explode", "head": {}, "data": {}}).encode(), 400),
        (json.dumps({"kind": "promise.create", "head": {}, "data": {"id": 7}}).encode(), 400),
        (b'{"kind":"\xff"}', 400),  # not UTF-8 inside a string
        (b"[" * 1500 + b"]" * 1500, 400),  # nested past the decoder's depth
        (b"x" * (5 * 1024 * 1024), 413),
    ],
)
def test_malformed_requests_get_a_4xx_and_the_server_goes_on(
    running: Topology, body: bytes, status: int
) -> None:
    assert ask(f"{running.url}/", body)[0] == status
    assert running.calculate(VALID[0]).stdout == "-3\n"


def exchange(port: int, request: bytes) -> bytes:
    """The status line the server answers ``request`` with ("" if it only hangs up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as connection:
        connection.sendall(request)
        return connection.makefile("rb").readline().rstrip()


MALFORMED = {
    "a negative Content-Length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "Content-Length and Transfer-Encoding": b"POST / HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "a header over 8 KiB": b"GET /health HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
    "10,000 headers": b"GET /health HTTP/1.1\r\n"
    + b"".join(b"X%d: y\r\n" % i for i in range(10_000))
    + b"\r\n",
    "an HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "non-ASCII in the path": "GET /hé HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "not HTTP at all": b"\x16\x03\x01 hello?\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_http_gets_a_400_and_no_log_line(running: Topology, request_bytes: bytes) -> None:
    printed = len(running["server"].lines)
    assert exchange(running.port, request_bytes).endswith(b" 400 Bad Request")
    assert running.calculate(VALID[0]).stdout == "-3\n"
    assert running["server"].lines[printed:] == []


def test_a_body_too_big_to_take_is_refused_before_it_is_sent(running: Topology) -> None:
    # Only the head is sent: an answer can only come without waiting for the body.
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000000\r\n\r\n"
    printed = len(running["server"].lines)
    assert exchange(running.port, head) == b"HTTP/1.1 413 Request Entity Too Large"
    # Its own line, which may come after the answer: not the last one printed so far.
    said = "refused a request from 127.0.0.1: a body of 5000000000 bytes (413)"
    running["server"].wait_for(f"^{re.escape(said)}$", after=printed)


def test_broken_connections_do_not_stop_the_server(running: Topology) -> None:
    host, port = "127.0.0.1", running.port
    # A poll stream that goes away while a message is on its way to it.
    with socket.create_connection((host, port)) as stream:
        stream.sendall(b"GET /poll/exp/gone HTTP/1.1\r\nHost: x\r\n\r\n")
        assert stream.recv(1024).startswith(b"HTTP/1.1 200")
        tags = {"resonate:target": "poll://uni@exp/gone", "resonate:origin": "g"}
        create = envelope("promise.create", id="g", timeoutAt=2**62, param={}, tags=tags)
        ask(f"{running.url}/", create)
    # Half a request, then nothing.
    with socket.create_connection((host, port)) as half:
        half.sendall(b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"kin')
    assert running.calculate(*VALID[:3]).stdout == "-3\n7\n3\n"
    assert "Traceback" not in "\n".join(running["server"].lines)


# ── Slow clients ────────────────────────────────────────────────────────────


def hold(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that each send half a request head, and then nothing."""
    held = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        connection.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Len")
        held.append(connection)
    return held


def hung_up(connection: socket.socket) -> bool:
    """Whether the server closed ``connection`` (awaited, bounded by its timeout)."""
    with connection:
        try:
            return connection.recv(1) == b""
        except ConnectionResetError:
            return True


@pytest.fixture
def patient() -> Iterator[Topology]:
    """A stand-in that gives a request 10 s and takes 50 connections, and its workers.

    Long enough for all the connections a test makes to be open at once, however
    slowly a busy machine lets the stand-in take them.
    """
    args = ("--request-timeout", "10", "--max-connections", "50")
    with Topology(server_args=args) as topology:
        yield topology.standard()


def test_slow_clients_are_capped_and_timed_out(patient: Topology) -> None:
    held = hold(patient.port, 120)
    # Over the cap, or past the timeout: every one of them is hung up on.
    assert all(hung_up(connection) for connection in held)
    assert patient.calculate(VALID[0]).stdout == "-3\n"
    said = "50 connections are open, the most allowed: new ones are closed at once"
    patient["server"].wait_for(f"^{said}$")
    assert [line for line in patient["server"].lines if "the most allowed" in line] == [said]


def test_a_shortage_of_file_descriptors_is_said_once(patient: Topology) -> None:
    server = patient["server"].popen.pid
    soft, hard = resource.prlimit(server, resource.RLIMIT_NOFILE)
    resource.prlimit(server, resource.RLIMIT_NOFILE, (40, hard))  # fewer than the cap of 50
    held = hold(patient.port, 60)
    try:
        assert all(hung_up(connection) for connection in held)
    finally:
        resource.prlimit(server, resource.RLIMIT_NOFILE, (soft, hard))
    assert patient.calculate(VALID[0]).stdout == "-3\n"
    lines = patient["server"].lines
    assert sum("out of file descriptors" in line for line in lines) == 1, lines
    assert "Traceback" not in "\n".join(lines)
