"""The servers Resonator runs on that you start yourself, and what their command lines share.

- ``devserver.py``: ``resonator-devserver``, a stand-in for ``resonate dev``:
  the SDK's model of the server (``model.py``) behind the server's HTTP protocol;
- ``postgres.py``: ``resonator-postgres``, a local Resonate on Postgres.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import NoReturn

KEEP = 1000  # settled computations a server keeps, by default


def positive(text: str) -> int:
    """An argparse type: a whole number above 0."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number above 0, not {text!r}")
    return int(text)


def tcp_port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (0: a free one, where that is allowed)."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"a port, 0 to 65535, not {text!r}")
    return int(text)


def duration(text: str) -> float:
    """An argparse type: a number of seconds above 0 (and under a million)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < 10**6:  # nor nan, nor inf
        raise argparse.ArgumentTypeError(f"a number of seconds above 0, not {text!r}")
    return value


class CommandLine(argparse.ArgumentParser):
    """Every program's command line: a mistake in it is one line, and exit status 2.

    (argparse's own puts its usage, three lines or more, above the message,
    where it buries what went wrong; ``--help`` shows it.)
    """

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


class OneLine(logging.Formatter):
    """The message alone: no level, no traceback (-vv shows those)."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def ending(status: int | None) -> str:
    """How a child process ended, from its exit status: "killed by SIGKILL", "exited 1"."""
    if status is None:
        return ""
    return f"killed by {signal.Signals(-status).name}" if status < 0 else f"exited {status}"
