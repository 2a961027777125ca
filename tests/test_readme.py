"""The README cannot drift: its console examples run, its quotes match the code."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from resonator.processes import WAIT
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
BLOCKS = list(re.finditer(r"^```(\w*)\n(.*?)^```$", README, re.MULTILINE | re.DOTALL))
QUOTE = re.compile(r"\(([\w/]+\.py)#L(\d+)-L(\d+)\)")


def examples() -> list[tuple[str, str]]:
    """(command, what it prints) for every ``$ `` line of every console block."""
    found = []
    for block in BLOCKS:
        if block.group(1) == "console":
            for chunk in block.group(2).split("$ ")[1:]:
                command, _, output = chunk.partition("\n")
                found.append((command, output))
    return found


def quotes() -> list[tuple[str, int, int, str]]:
    """(file, first line, last line, code) for every python block citing its lines."""
    found = []
    for block in BLOCKS:
        if block.group(1) == "python":
            cited = QUOTE.findall(README[: block.start()])[-1]
            found.append((cited[0], int(cited[1]), int(cited[2]), block.group(2)))
    return found


def test_the_readme_has_examples_and_quotes() -> None:
    assert len(examples()) >= 3
    assert len(quotes()) >= 3


@pytest.mark.parametrize(("command", "output"), examples())
def test_console_examples_print_what_the_readme_shows(command: str, output: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GRP", "PID", "RESONATE_URL")}
    done = subprocess.run(
        ["sh", "-c", command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.stdout == output


@pytest.mark.parametrize(("path", "first", "last", "code"), quotes())
def test_quoted_code_stands_at_the_lines_cited(path: str, first: int, last: int, code: str) -> None:
    lines = (ROOT / path).read_text().splitlines(keepends=True)
    assert "".join(lines[first - 1 : last]) == code
