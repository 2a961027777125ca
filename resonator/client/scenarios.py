"""The article's three failure modes, played on real processes: in a terminal, or in a browser.

A ``Stage`` is the article's processes (a server, ``exp/lhs``, ``exp/rhs``
and two ops workers, on a free loopback port) and the acts the scenarios are
made of: start a prompt, hear a process print a line, kill one, wait for the
tree to reach a state, read the answer, say how often each operator ran. How
the stage says what happens, and how it waits for the tree, is the player's:
``resonator-demo`` prints (``demo.py``), ``resonator-web`` shows a page
(``resonator/web/``).
"""

from __future__ import annotations

import re
import signal
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from resonate.ids import ORIGIN_SEP

from resonator.client.trees import ended, walk
from resonator.harness.processes import TRACE, WAIT, Topology, started

if TYPE_CHECKING:
    from collections.abc import Callable

    from resonator.client.trees import Node
    from resonator.harness.processes import Process as Child
    from resonator.harness.processes import Transcript

ARTICLE = "(1 + 2) * (3 - 4)"
ANSWER = "-3"
OPS_PIDS = ("ops1", "ops2")
WORKERS = (("exp", "lhs"), ("exp", "rhs"), ("ops", OPS_PIDS[0]), ("ops", OPS_PIDS[1]))
# Two-second leases, and operators that take a second: a crash heals within
# seconds, and there is time to kill an operator in the middle of its work.
LEASES = {"RESONATOR_TTL": "2", "RESONATOR_OP_DELAY": "1"}


class Stage(ABC):
    """The processes, and the acts of the scenarios; saying and watching are left to the player."""

    def __init__(self, server: str, env: dict[str, str]) -> None:
        self.topology = Topology(server)
        self.topology.env |= env  # for every process it starts
        self.heard: Transcript = self.topology.transcript  # the lines the acts listen for

    def start(self) -> None:
        """The server, then the workers, started at once and each awaited."""
        self.topology.server()
        workers = [self.topology.worker(group, pid, wait=False) for group, pid in WORKERS]
        for process, (group, pid) in zip(workers, WORKERS, strict=True):
            started(process, group, pid)

    @abstractmethod
    def say(self, text: str) -> None:
        """Tell the reader what happens."""

    @abstractmethod
    def watch(self, id: str, until: Callable[[Node], bool] = ended) -> Node:
        """Follow the tree of ``id`` until ``until`` holds for it; that state."""

    @abstractmethod
    def midway(self, root: Node) -> None:
        """Scenario 1 at its most telling: exp/lhs's work unclaimed (the demo saves pictures)."""

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
        runs = Runs()
        for name, line in self.heard.after(0, timeout=0):  # all heard so far
            runs.hear(name, line)
        for step, what, workers in runs.of(id):
            if len(workers) == 1:
                self.once(f"{what} [{step}] ran once, on {workers[0]}")
            else:
                times = "twice" if len(workers) == 2 else f"{len(workers)} times"
                self.say(
                    f"{what} [{step}] ran {times}, on {', '.join(workers)}: a worker "
                    "died before it settled it, and its lease lapsed"
                )
        self.say(why)

    def once(self, text: str) -> None:
        """Say that an operator ran once."""
        self.say(text)


class Runs:
    """The runs of each operator step, counted from the trace lines of the processes."""

    def __init__(self, keep: int | None = None) -> None:
        self.keep = keep  # computations remembered (None: all); the oldest go first
        # computation id -> step id -> (what it computes, who ran it, in order)
        self.steps: dict[str, dict[str, tuple[str, list[str]]]] = {}

    def hear(self, name: str, line: str) -> None:
        """Count ``line`` if it says that process ``name`` began an operator."""
        trace = TRACE.match(line)
        if trace is None or trace["what"].startswith("="):
            return
        steps = self.steps.setdefault(trace["id"].partition(ORIGIN_SEP)[0], {})
        steps.setdefault(trace["id"], (trace["what"], []))[1].append(name)
        if self.keep is not None and len(self.steps) > self.keep:
            del self.steps[next(iter(self.steps))]

    def of(self, id: str) -> list[tuple[str, str, list[str]]]:
        """(step, what it computes, who ran it) for each operator of computation ``id``."""
        steps = self.steps.get(id, {})
        return [(step, what, list(workers)) for step, (what, workers) in sorted(steps.items())]


# ── The scenarios ───────────────────────────────────────────────────────────


def lhs_is_missed(root: Node) -> bool:
    """exp/lhs's step is unclaimed (its lease lapsed), and exp/rhs has done all it can."""
    steps = {node.id: node for node in walk(root)}
    lhs = steps.get(f"{root.id}:1")
    rhs = [node for node in steps.values() if node.where == "exp/rhs" and not node.children]
    return lhs is not None and lhs.task == "unclaimed" and all(n.state == "resolved" for n in rhs)


def scenario_1(stage: Stage, id: str) -> bool:
    """exp/lhs dies right after it takes = 1 + 2."""
    stage.say(f"Scenario 1: {scenario_1.__doc__}")
    prompt = stage.prompt(id, "prompt-1")
    stage.hear(("lhs",), rf"= 1 \+ 2  \[{re.escape(id)}:1\]$")
    stage.kill("lhs", "as it starts on = 1 + 2")
    stage.say("What exp/rhs can do gets done; what is for exp/lhs waits, once its lease lapses:")
    stage.midway(stage.watch(id, lhs_is_missed))
    stage.say("exp/lhs comes back, with the same pid, and takes up = 1 + 2:")
    stage.topology.worker("exp", "lhs")
    stage.watch(id, ended)
    right = stage.answer(prompt)
    stage.operators(id, "Each operator ran once: the work for exp/lhs waited for it.")
    return right


def scenario_2(stage: Stage, id: str) -> bool:
    """the ops worker running + 1 2 dies in the middle of it."""
    stage.say(f"Scenario 2: {scenario_2.__doc__}")
    prompt = stage.prompt(id, "prompt-2")
    busy = stage.hear(OPS_PIDS, rf"\+ 1 2  \[{re.escape(id)}:1\.3\]$")
    stage.kill(busy, "in the middle of + 1 2")
    lease = stage.topology.env.get("RESONATOR_TTL", "60")
    stage.say(f"When its lease lapses ({lease} s), the other ops worker takes + 1 2:")
    stage.watch(id, ended)
    right = stage.answer(prompt)
    stage.topology.worker("ops", busy)
    stage.operators(id, "Nothing that had settled ran again.")
    return right


def scenario_3(stage: Stage, id: str) -> bool:
    """the prompt dies while it waits for the answer."""
    stage.say(f"Scenario 3: {scenario_3.__doc__}")
    stage.prompt(id, "prompt-3")
    stage.hear(OPS_PIDS, rf"\[{re.escape(id)}:\d\.3\]$")
    stage.kill("prompt-3", "while it waits")
    stage.say("A new prompt asks for the same id, and attaches to the same computation:")
    second = stage.prompt(id, "another-prompt-3")
    stage.watch(id, ended)
    right = stage.answer(second)
    stage.operators(id, "Each operator ran once: the computation went on without a prompt.")
    return right


SCENARIOS: dict[str, Callable[[Stage, str], bool]] = {
    "1": scenario_1,
    "2": scenario_2,
    "3": scenario_3,
}
