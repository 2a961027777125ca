"""The README and docs/ cannot drift: their console examples run, their quotes match the code."""

from __future__ import annotations

import os
import re
import subprocess
from typing import TYPE_CHECKING

import pytest

from resonator.processes import WAIT
from tests.conftest import ROOT

if TYPE_CHECKING:
    from pathlib import Path

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
QUOTE = re.compile(r"\(([\w./]+\.py)#L(\d+)-L(\d+)\)")
LINK = re.compile(r"\]\(([^)#:]+)(?:#[^)]*)?\)")


def examples() -> list[tuple[str, str]]:
    """(command, what it prints) for every ``$ `` line of every console block."""
    found = []
    for page in PAGES:
        for block in BLOCK.finditer(page.read_text()):
            if block.group(1) == "console":
                for chunk in block.group(2).split("$ ")[1:]:
                    command, _, output = chunk.partition("\n")
                    found.append((command, output))
    return found


def quotes() -> list[tuple[str, int, int, str]]:
    """(file, first line, last line, code) for every python block citing its lines."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in BLOCK.finditer(text):
            if block.group(1) == "python":
                path, first, last = QUOTE.findall(text[: block.start()])[-1]
                cited = (page.parent / path).resolve().relative_to(ROOT)
                found.append((str(cited), int(first), int(last), block.group(2)))
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


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_file_a_page_links_to_exists(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        assert (page.parent / target).exists(), f"{page.name} links to {target}"
