"""The processes the page started, as it shows them, and the article's failure modes played on them.

The acts here block (a worker is started once it says so, a scenario waits
for lines and for states of the tree), so each runs on a thread of its own
beside the page's event loop, one act at a time; what the page should show
is handed to the loop to be put on its board. Only the processes this page
started are ever signalled, each by the ``Popen`` that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import threading
from collections import defaultdict, deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from resonator.client.scenarios import ARTICLE, LEASES, OPS_PIDS, SCENARIOS, WORKERS, Runs, Stage
from resonator.client.trees import ended
from resonator.harness.processes import WAIT
from resonator.servers import ending
from resonator.web.live import LISTED

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from resonator.client.trees import Node
    from resonator.harness.processes import Process as Child
    from resonator.web.live import Board, Listing, Trees

LINES = 6  # latest lines shown of each process
STORY = 12  # sentences kept of what the stage said
EVERY = 0.25  # seconds between looks at who is up, when no process prints
GROUP_OF = dict((pid, group) for group, pid in WORKERS)  # the article's workers
# What a kill from the page leads to, said after it.
AFTER_KILL = {
    "exp": "what is addressed to it waits, unclaimed once its lease lapses, "
    "until a process with its pid is back",
    "ops": "an operation it had taken goes to another ops worker once its lease lapses",
    "server": "the workers wait for it, and every promise it kept in memory is gone",
    "postgres": "the workers wait for it; every promise is in the database",
}


class Busy(Exception):
    """An act refused, because another is under way or it cannot be done; the message says why."""


class PageStage(Stage):
    """The article's processes, their latest lines and the operators' runs, for the page."""

    def __init__(self, server: str) -> None:
        # The demo's leases and delays, unless the environment says otherwise.
        super().__init__(server, {k: v for k, v in LEASES.items() if not os.environ.get(k)})
        self.acting = threading.Lock()  # held by the act under way
        self.doing = ""  # what it is, as refusals say it
        self.playing = ""  # the scenario being played, if any
        self.plays: defaultdict[str, int] = defaultdict(int)
        self.story: deque[str] = deque(maxlen=STORY)
        self.latest: defaultdict[str, deque[str]] = defaultdict(lambda: deque(maxlen=LINES))
        self.runs = Runs(keep=LISTED)
        self.groups = dict(GROUP_OF)  # the workers it may start again: the article's, and the
        self.added: list[str] = []  # ops workers added to the pool, in order (ops3, ops4...)

    def open(self, board: Board, trees: Trees, listing: Listing) -> None:
        """Show the processes on ``board`` from now on (called on the page's event loop)."""
        self.loop = asyncio.get_running_loop()
        self.board, self.trees, self.listing = board, trees, listing
        self.tell()
        threading.Thread(target=self.relay, daemon=True).start()

    def show(self, name: str, value: Any) -> None:
        """Put a part on the board, from any thread (nothing, once the page has stopped)."""
        self.on_loop(self.board.put, name, value)

    def on_loop(self, call: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self.loop.call_soon_threadsafe(call, *args)

    def relay(self) -> None:
        """The latest lines of each process, the operators' runs and who is up, as they change."""
        seen = 0
        while not self.loop.is_closed():
            for name, line in self.topology.transcript.after(seen, timeout=EVERY):
                seen += 1
                self.latest[name].append(line)
                self.runs.hear(name, line)
            self.show("processes", self.snapshot())
            self.show("runs", {id: self.runs.of(id) for id in self.runs.steps})

    def snapshot(self) -> list[dict[str, Any]]:
        """The server, the workers (the pool's together), then the prompts of the scenarios."""
        # Copies: an act on another thread may add a worker, or drop one, meanwhile.
        processes, groups = self.topology.processes.copy(), self.groups.copy()
        order = [*(name for name in ("server", *groups) if name in processes), *processes]
        return [
            {
                "name": name,
                "title": self.title(name),
                "pid": processes[name].popen.pid,
                "up": processes[name].popen.poll() is None,
                "ended": ending(processes[name].popen.returncode),
                "lines": list(self.latest[name]),
                "restartable": name == "server" or name in groups,
                "pool": groups.get(name) == "ops",
            }
            for name in dict.fromkeys(order)
        ]

    def title(self, name: str) -> str:
        """A process as the page names it: exp/lhs, ops/ops1, the server, a prompt."""
        group = self.groups.get(name)
        return f"{group}/{name}" if group else name

    # ── Acts: one at a time, each on a thread of its own ──

    def claim(self, what: str) -> None:
        """Hold the stage for ``what``, or ``Busy`` if another act holds it."""
        if not self.acting.acquire(blocking=False):
            raise Busy(f"wait: {self.doing}")
        self.doing = what

    @contextmanager
    def act(self, what: str) -> Iterator[None]:
        self.claim(what)
        try:
            yield
        finally:
            self.acting.release()

    def kill_pid(self, pid: int) -> None:
        """SIGKILL the process with ``pid``: one this page started, still running."""
        with self.act("a process is being killed"):
            for name, process in list(self.topology.processes.items()):
                if process.popen.pid == pid and process.popen.poll() is None:
                    self.kill(name, "with its button")
                    if why := self.aftermath(name):
                        self.say(f"{self.title(name)} is down: {why}.")
                    return
        raise Busy(f"no process this page started runs with pid {pid}")

    def aftermath(self, name: str) -> str | None:
        """What follows when process ``name`` dies (a prompt's death is a scenario's to tell)."""
        if name == "server":
            return AFTER_KILL["postgres" if self.topology.kind == "postgres" else "server"]
        return AFTER_KILL.get(self.groups.get(name, ""))

    def restart(self, name: str) -> None:
        """Start the server, or a worker, again."""
        if name != "server" and name not in self.groups:
            raise Busy(f"{name} is not a process this page starts")
        with self.act(f"{self.title(name)} is starting"):
            if (old := self.topology.processes.get(name)) and old.popen.poll() is None:
                raise Busy(f"{self.title(name)} is running already")
            self.begin(name)
            self.say(f"started {self.title(name)}")

    def begin(self, name: str) -> None:
        if name == "server":
            self.topology.server()
        else:
            self.topology.worker(self.groups[name], name)

    def grow(self) -> None:
        """One more ops worker in the pool: the first of ops3, ops4... that is not there."""
        with self.act("an ops worker is starting"):
            pid = next(
                pid
                for n in itertools.count(len(OPS_PIDS) + 1)
                if (pid := f"ops{n}") not in self.topology.processes
            )
            self.groups[pid] = "ops"
            self.added.append(pid)
            self.topology.worker("ops", pid)
            self.say(f"started ops/{pid}: the ops pool has {self.pool()} workers up")

    def shrink(self) -> None:
        """Stop the ops worker added last (SIGTERM, as a service manager stops one), and drop it."""
        with self.act("an ops worker is stopping"):
            if not self.added:
                raise Busy(
                    f"the pool is down to {' and '.join(OPS_PIDS)}, the article's: kill one "
                    "with its button to see what waits for it"
                )
            pid = self.added[-1]
            process = self.topology.processes[pid]
            if process.popen.poll() is None:
                process.signal(signal.SIGTERM)
                try:
                    process.wait_closed()
                except subprocess.TimeoutExpired:
                    process.kill()  # as a service manager does once its stop times out
            self.added.pop()
            del self.topology.processes[pid], self.groups[pid]  # off the page once it has ended
            self.say(
                f"stopped ops/{pid}: the ops pool has {self.pool()} workers up; an operation it "
                "had taken goes to another once its lease lapses"
            )

    def pool(self) -> int:
        """How many ops workers are up."""
        return sum(
            self.topology.processes[name].popen.poll() is None
            for name, group in self.groups.items()
            if group == "ops" and name in self.topology.processes
        )

    def play(self, name: str) -> None:
        """Begin scenario ``name`` on a thread of its own, or say at once why it cannot."""
        if name not in SCENARIOS:
            raise Busy(f"there is no scenario {name}")
        self.claim(f"scenario {name} is playing")
        self.plays[name] += 1
        id = f"demo-{name}" + (f"-{self.plays[name]}" if self.plays[name] > 1 else "")
        threading.Thread(target=self.act_out, args=(name, id), daemon=True).start()

    def act_out(self, name: str, id: str) -> None:
        self.playing = name
        self.story.clear()  # each scenario's story on its own
        try:
            self.revive()
            SCENARIOS[name](self, id)
        except Exception as error:  # a process that never said what was awaited, say
            self.say(f"the scenario went wrong: {error}")
        finally:
            self.playing = ""
            self.acting.release()
            self.tell()

    def revive(self) -> None:
        """Start whatever of the server and the workers is down, for a scenario to begin whole."""
        for name in ("server", *GROUP_OF):
            if self.topology[name].popen.poll() is not None:
                self.begin(name)
                self.say(f"started {self.title(name)}, for the scenario")

    # ── What the scenarios need of a stage ──

    def say(self, text: str) -> None:
        self.story.append(text)
        self.tell()

    def tell(self) -> None:
        """The story so far, and the scenario being played, if any."""
        self.show("story", {"said": list(self.story), "playing": self.playing})

    def watch(self, id: str, until: Callable[[Node], bool] = ended) -> Node:
        """Wait until the tree of ``id`` satisfies ``until``: the page shows it meanwhile."""
        future = asyncio.run_coroutine_threadsafe(self.trees.until(id, until), self.loop)
        try:
            return future.result(timeout=WAIT)
        finally:
            future.cancel()

    def midway(self, root: Node) -> None:
        """The page shows it as it is."""

    def once(self, text: str) -> None:
        """Nothing: the page lists every operator's runs, under the processes."""

    def prompt(self, id: str, name: str) -> Child:
        self.on_loop(self.listing.add, id, ARTICLE, True)
        return super().prompt(id, name)
