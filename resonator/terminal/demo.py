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
import re
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from resonate.resonate import DEFAULT_TTL
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from resonator.connections import Connection
from resonator.harness.processes import TRACE, WAIT, Topology, Transcript, missing
from resonator.terminal.cli import setup_logging
from resonator.terminal.tree import Node, Reader, rows, table
from resonator.terminal.watch import changes, ended, show

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable

    from rich.console import RenderableType

    from resonator.harness.processes import Process as Child

ARTICLE = "(1 + 2) * (3 - 4)"
ANSWER = "-3"
OPS = ("ops1", "ops2")
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


class Demo:
    """The processes, a view of their computation, and what is said about both."""

    def __init__(self, console: Console, pictures: Path | None, server: str) -> None:
        self.console = console
        self.pictures = pictures  # where to save pictures of scenario 1 and the topology
        self.live = console.is_terminal and not console.is_dumb_terminal
        self.heard = Transcript()  # every line the processes printed, once relayed
        # Two-second leases, and operators that take a second.
        self.topology = Topology(server, RESONATOR_TTL="2", RESONATOR_OP_DELAY="1")
        threading.Thread(target=self.relay, daemon=True).start()
        self.loop = asyncio.Runner()
        self.loop.get_loop()  # made now: a Ctrl-C later must not find it half made
        self.reader: Reader | None = None
        self.connection: Connection | None = None

    def start(self) -> None:
        """The server, exp/lhs, exp/rhs and two ops workers; a client to read with."""
        self.topology.server()
        server = "a stand-in server" if self.topology.kind == "stand-in" else "resonate dev"
        self.say(f"{server} at {self.topology.url}; exp/lhs, exp/rhs and two ops workers")
        for group, pid in (("exp", "lhs"), ("exp", "rhs"), ("ops", OPS[0]), ("ops", OPS[1])):
            self.topology.worker(group, pid)
        # Never started: it only sends requests, to read promises and tasks.
        self.connection = Connection(self.topology.url, "demo", "demo", DEFAULT_TTL)
        self.reader = Reader(self.connection)

    def stop(self) -> None:
        """Every process it started, and its own client: stopped, however the demo ended."""
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

    def hear(self, names: tuple[str, ...], pattern: str) -> str:
        """Which of ``names`` first prints a line matching ``pattern`` (waiting for it)."""
        regex, seen = re.compile(pattern), 0
        deadline = time.monotonic() + WAIT
        while (left := deadline - time.monotonic()) > 0:
            for name, line in self.heard.after(seen, left):
                seen += 1
                if name in names and regex.search(line):
                    return name
        raise TimeoutError(f"none of {', '.join(names)} printed {pattern!r}")

    # ── Watching ──

    def watch(self, id: str, until: Callable[[Node], bool] = ended) -> Node:
        """Show the tree of ``id`` each time it changes, until ``until`` holds for it."""
        assert self.reader is not None
        last = self.loop.run(show(before(changes(self.reader, id), until), self.console))
        assert last is not None
        return last

    def save(self, picture: RenderableType, name: str, title: str) -> None:
        """Save what the terminal shows as an SVG picture, under ``pictures``."""
        assert self.pictures is not None
        with open(os.devnull, "w") as nowhere:
            recorder = Console(record=True, width=92, file=nowhere)
            recorder.print(picture)
        self.pictures.mkdir(parents=True, exist_ok=True)
        path = self.pictures / name
        path.write_text(recorder.export_svg(title=title))
        self.say(f"saved {path}")

    # ── Acting ──

    def prompt(self, id: str, name: str) -> Child:
        self.say(f"{name}: resonator --id {id} '{ARTICLE}'")
        return self.topology.prompt("--id", id, ARTICLE, name=name)

    def kill(self, name: str, when: str) -> None:
        self.topology[name].signal(signal.SIGKILL)
        self.topology[name].wait_closed()
        self.say(f"killed {name} (SIGKILL) {when}")

    def answer(self, prompt: Child) -> bool:
        value = prompt.wait_for(r"^-?\d+$").group(0)
        prompt.wait_closed()
        right = value == ANSWER
        self.say(f"{prompt.name} printed {value}: {'right' if right else 'WRONG'}")
        return right

    def operators(self, id: str, why: str) -> None:
        """How many times each operator of ``id`` ran, counted from the workers' own lines."""
        ran: dict[str, list[str]] = defaultdict(list)  # in the order they ran
        what: dict[str, str] = {}
        for name, line in self.heard.after(0, timeout=0):  # all heard so far
            trace = TRACE.match(line)
            if name in OPS and trace and trace["id"].startswith(f"{id}:"):
                ran[trace["id"]].append(name)
                what[trace["id"]] = trace["what"]
        for step, workers in sorted(ran.items()):
            if len(workers) == 1:
                self.say(f"{what[step]} [{step}] ran once, on {workers[0]}")
            else:
                times = "twice" if len(workers) == 2 else f"{len(workers)} times"
                self.say(
                    f"{what[step]} [{step}] ran {times}, on {', '.join(workers)}: a worker "
                    "died before it settled it, and its lease lapsed"
                )
        self.say(why)


# ── The scenarios ───────────────────────────────────────────────────────────


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


def lhs_is_missed(root: Node) -> bool:
    """exp/lhs's step is unclaimed (its lease lapsed), and exp/rhs has done all it can."""
    steps = {node.id: node for _, node in rows(root)}
    lhs = steps.get(f"{root.id}:1")
    rhs = [node for node in steps.values() if node.where == "exp/rhs" and not node.children]
    return lhs is not None and lhs.task == "unclaimed" and all(n.state == "resolved" for n in rhs)


def scenario_1(demo: Demo) -> bool:
    """exp/lhs dies right after it takes = 1 + 2."""
    demo.say(f"Scenario 1: {scenario_1.__doc__}")
    prompt = demo.prompt("demo-1", "prompt-1")
    demo.hear(("lhs",), r"= 1 \+ 2  \[demo-1:1\]$")
    demo.kill("lhs", "as it starts on = 1 + 2")
    demo.say("What exp/rhs can do gets done; what is for exp/lhs waits, once its lease lapses:")
    root = demo.watch("demo-1", lhs_is_missed)
    if demo.pictures:
        demo.save(table(root), "tree.svg", "resonator-demo: exp/lhs was killed")
        demo.save(topology(), "topology.svg", "Resonator: the processes and the server")
    demo.say("exp/lhs comes back, with the same pid, and takes up = 1 + 2:")
    demo.topology.worker("exp", "lhs")
    demo.watch("demo-1", ended)
    right = demo.answer(prompt)
    demo.operators("demo-1", "Each operator ran once: the work for exp/lhs waited for it.")
    return right


def scenario_2(demo: Demo) -> bool:
    """the ops worker running + 1 2 dies in the middle of it."""
    demo.say(f"Scenario 2: {scenario_2.__doc__}")
    prompt = demo.prompt("demo-2", "prompt-2")
    busy = demo.hear(OPS, r"\+ 1 2  \[demo-2:1\.3\]$")
    demo.kill(busy, "in the middle of + 1 2")
    demo.say("When its lease lapses (2 s), the other ops worker takes + 1 2:")
    demo.watch("demo-2", ended)
    right = demo.answer(prompt)
    demo.topology.worker("ops", busy)
    demo.operators("demo-2", "Nothing that had settled ran again.")
    return right


def scenario_3(demo: Demo) -> bool:
    """the prompt dies while it waits for the answer."""
    demo.say(f"Scenario 3: {scenario_3.__doc__}")
    demo.prompt("demo-3", "prompt-3")
    demo.hear(OPS, r"\[demo-3:\d\.3\]$")
    demo.kill("prompt-3", "while it waits")
    demo.say("A new prompt asks for the same id, and attaches to the same computation:")
    second = demo.prompt("demo-3", "another-prompt-3")
    demo.watch("demo-3", ended)
    right = demo.answer(second)
    demo.operators("demo-3", "Each operator ran once: the computation went on without a prompt.")
    return right


SCENARIOS = {"1": scenario_1, "2": scenario_2, "3": scenario_3}


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
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
    # As for the prompt: no line from the SDK or asyncio, and no traceback
    # (a read of the tree cut short by Ctrl-C may fail once its server is gone).
    setup_logging(0, worker=False)
    console = Console(highlight=False)
    demo = Demo(console, args.pictures, args.server)
    started = time.monotonic()
    try:
        demo.start()
        chosen = [args.scenario] if args.scenario else list(SCENARIOS)
        right = [SCENARIOS[name](demo) for name in chosen]
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
