"""The README and docs/ cannot drift: their console examples run, their quotes match the code."""

from __future__ import annotations

import ast
import os
import re
import subprocess
from typing import TYPE_CHECKING

import pytest

from resonator.harness.processes import WAIT
from tests.helpers import ROOT

if TYPE_CHECKING:
    from pathlib import Path

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SOURCE = re.compile(r"\]\(([\w./]+\.py)\)")  # a link to a Python file
NAME = re.compile(r"^(?:async def |def |class )?(\w+)")
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


def quotes() -> list[tuple[str, str, str]]:
    """(file, name, code) for every python block: the file is the last one linked above it."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in BLOCK.finditer(text):
            if block.group(1) == "python":
                path = SOURCE.findall(text[: block.start()])[-1]
                cited = (page.parent / path).resolve().relative_to(ROOT)
                name = NAME.match(block.group(2))
                assert name, f"{page.name}: a quote must begin with what it names"
                found.append((str(cited), name.group(1), block.group(2)))
    return found


def definition(path: str, name: str, length: int) -> str:
    """``length`` lines of ``path`` from the definition of ``name`` (and the comment above it)."""
    source = (ROOT / path).read_text()
    lines = source.splitlines(keepends=True)
    for node in ast.parse(source).body:
        names = [node.name] if hasattr(node, "name") else []
        names += [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        target = getattr(node, "target", None)
        names += [target.id] if isinstance(target, ast.Name) else []
        if name in names:
            start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
            while start > 0 and lines[start - 1].lstrip().startswith("#"):
                start -= 1
            return "".join(lines[start : start + length])
    raise AssertionError(f"{path} defines no {name}")


def test_the_readme_has_examples_and_quotes_the_evaluator() -> None:
    assert len(examples()) >= 3
    assert ("resonator/resonator.py", "evaluate") in [(path, name) for path, name, _ in quotes()]


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


@pytest.mark.parametrize(("path", "name", "code"), quotes())
def test_quoted_code_is_what_the_source_defines(path: str, name: str, code: str) -> None:
    assert definition(path, name, len(code.splitlines())) == code


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_file_a_page_links_to_exists(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        assert (page.parent / target).exists(), f"{page.name} links to {target}"
