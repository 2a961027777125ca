"""resonator-demo: the article's failure modes, healed on real processes, in under a minute.

    uv run resonator-demo        # the three scenarios
    uv run resonator-demo 2      # one of them

It starts its own stand-in server and workers on a free loopback port (the
process harness the tests use), with two-second leases and operators that
take a second. Each scenario starts a computation of (1 + 2) * (3 - 4) from a
prompt of its own, kills a process with SIGKILL at a chosen step, and shows
the promise tree live until the answer arrives; then it says how many times
each operator ran, and why. Piped, it prints plain text, and exits 0 only if
every answer was right. Ctrl-C stops it and every process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from resonate.resonate import DEFAULT_TTL
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from resonator.client.scenarios import LEASES, SCENARIOS, Stage
from resonator.client.settings import setup_logging
from resonator.client.trees import Reader, changes, ended
from resonator.connections import Connection
from resonator.harness.processes import TRACE, Transcript, missing
from resonator.servers import CommandLine
from resonator.terminal.drawing import show, table

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable

    from rich.console import RenderableType

    from resonator.client.trees import Node

TOPOLOGY = """\
❯ prompt   R = (1 + 2) * (3 - 4)
    │  creates the root promise R and runs its first step
    ▼
┌─────────────────────────────────────────────────────────────────────────┐
│ Resonate server   a durable promise and a task for every call,          │
│                   each task leased to a process at the call's address   │
└─────────────────────────────────────────────────────────────────────────┘
    │ R:1    = 1 + 2          │ R:2    = 3 - 4          │ R:3    * 3 -1
    │ R:1.1  = 1              │ R:1.2  = 2              │ R:1.3  + 1 2
    │ R:2.1  = 3              │ R:2.2  = 4              │ R:2.3  - 3 4
    ▼ poll://uni@exp/lhs      ▼ poll://uni@exp/rhs      ▼ poll://any@ops
┌─────────────────────┐   ┌─────────────────────┐   ┌─────────────────────┐
│ exp/lhs             │   │ exp/rhs             │   │ ops (any member)    │
│ every left operand  │   │ every right operand │   │ + - *               │
└─────────────────────┘   └─────────────────────┘   └─────────────────────┘
  Later runs of R (after a child settles) go to poll://any@exp: either exp
  worker. The workers never talk to each other, only to the server."""


class Demo(Stage):
    """The article's processes, shown in a terminal: what is said, the tree live, pictures."""

    def __init__(self, console: Console, pictures: Path | None, server: str) -> None:
        super().__init__(server, LEASES)
        self.console = console
        self.pictures = pictures  # where to save pictures of scenario 1 and the topology
        self.live = console.is_terminal and not console.is_dumb_terminal
        # Listened to once relayed, so that what is said of a line comes after it.
        self.heard = Transcript()
        threading.Thread(target=self.relay, daemon=True).start()
        self.loop = asyncio.Runner()
        self.loop.get_loop()  # made now: a Ctrl-C later must not find it half made
        self.reader: Reader | None = None
        self.connection: Connection | None = None

    def start(self) -> None:
        """The server and the workers; a connection to read trees with."""
        super().start()
        server = "a stand-in server" if self.topology.kind == "stand-in" else "resonate dev"
        self.say(f"{server} at {self.topology.url}; exp/lhs, exp/rhs and two ops workers")
        # Never started: it only sends requests, to read promises and tasks.
        self.connection = Connection(self.topology.url, "demo", "demo", DEFAULT_TTL)
        self.reader = Reader(self.connection)

    def stop(self) -> None:
        """Every process it started, and its own connection: stopped, however the demo ended."""
        try:
            self.topology.__exit__(None, None, None)
            if self.connection:
                self.loop.run(self.connection.network.stop())
        finally:
            self.loop.close()

    # ── Saying ──

    def say(self, text: str) -> None:
        if self.live:
            self.console.print(f"[bold cyan]>[/] {escape(text)}")
        else:
            self.print(f"> {text}")

    def print(self, text: str) -> None:
        """One piece of plain output, whole, though lines come from many threads."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def relay(self) -> None:
        """Every line a process prints is heard; a worker's trace lines are shown, first."""
        seen = 0
        while True:
            for name, line in self.topology.transcript.after(seen):
                seen += 1
                if TRACE.match(line):
                    if self.live:
                        self.console.print(f"  [dim]{escape(line)}[/]")
                    else:
                        self.print(f"  {line}")
                self.heard.add(name, line)

    # ── Watching ──

    def watch(self, id: str, until: Callable[[Node], bool] = ended) -> Node:
        """Show the tree of ``id`` each time it changes, until ``until`` holds for it."""
        assert self.reader is not None
        last = self.loop.run(show(before(changes(self.reader, id), until), self.console))
        assert last is not None
        return last

    def midway(self, root: Node) -> None:
        if self.pictures:
            self.save(table(root), "tree.svg", "resonator-demo: exp/lhs was killed")
            self.save(topology(), "topology.svg", "Resonator: the processes and the server")

    def save(self, picture: RenderableType, name: str, title: str) -> None:
        """Save what the terminal shows as an SVG picture, under ``pictures``."""
        assert self.pictures is not None
        with open(os.devnull, "w") as nowhere:
            recorder = Console(record=True, width=92, file=nowhere)
            recorder.print(picture)
        path = self.pictures / name
        path.write_text(recorder.export_svg(title=title))
        self.say(f"saved {path}")


# ── Pictures, and the tree up to a state ────────────────────────────────────


def topology() -> Text:
    """The article's processes and the server, as a picture for the README."""
    picture = Text(TOPOLOGY)
    picture.highlight_words(["❯ prompt", "Resonate server", "exp/lhs", "exp/rhs", "ops"], "bold")
    picture.highlight_regex(r"poll://\S+", "magenta")
    return picture


async def before(
    states: AsyncGenerator[Node], until: Callable[[Node], bool]
) -> AsyncIterator[Node]:
    """The states up to the first for which ``until`` holds."""
    async with contextlib.aclosing(states):
        async for state in states:
            yield state
            if until(state):
                return


def main(argv: list[str] | None = None) -> int:
    cli = CommandLine(
        prog="resonator-demo",
        description="The article's failure modes, healed on real processes: a server "
        "and workers of its own, on a free loopback port.",
        epilog="scenarios:\n"
        + "\n".join(f"  {name}  {play.__doc__}" for name, play in SCENARIOS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_argument(
        "scenario", nargs="?", choices=sorted(SCENARIOS), help="play only this one (default: all)"
    )
    cli.add_argument(
        "--server",
        choices=("stand-in", "resonate"),
        default="stand-in",
        help="the stand-in, or the real server: resonate on PATH (default: %(default)s)",
    )
    cli.add_argument(
        "--pictures",
        type=Path,
        metavar="DIR",
        help="save the live tree of scenario 1, mid-way, and the topology, as SVG pictures",
    )
    args = cli.parse_args(argv)
    if why := missing(args.server):
        cli.error(why)
    if args.pictures:
        # Made, and tried, before the demo runs, rather than failing after it.
        try:
            args.pictures.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            cli.error(f"--pictures: cannot make {args.pictures}: {error.strerror}")
        if not os.access(args.pictures, os.W_OK):
            cli.error(f"--pictures: cannot write in {args.pictures}")
    # As for the prompt: no line from the SDK or asyncio, and no traceback
    # (a read of the tree cut short by Ctrl-C may fail once its server is gone).
    setup_logging(0, worker=False)
    console = Console(highlight=False)
    demo = Demo(console, args.pictures, args.server)
    started = time.monotonic()
    try:
        demo.start()
        chosen = [args.scenario] if args.scenario else list(SCENARIOS)
        right = [SCENARIOS[name](demo, f"demo-{name}") for name in chosen]
    except KeyboardInterrupt:
        demo.say("stopped: every process the demo started is stopped too")
        return 130
    except (TimeoutError, AssertionError) as error:
        demo.say(f"the demo went wrong: {error}")
        return 1
    finally:
        demo.stop()
    demo.say(f"{sum(right)} of {len(right)} answers right, in {time.monotonic() - started:.0f} s")
    return 0 if all(right) else 1


if __name__ == "__main__":
    sys.exit(main())
