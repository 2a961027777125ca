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
import os
import threading
from collections import defaultdict, deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from resonator.client.scenarios import ARTICLE, LEASES, SCENARIOS, WORKERS, Runs, Stage
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
GROUP_OF = dict((pid, group) for group, pid in WORKERS)  # the workers it may start again
# What a kill from the page leads to, said after it.
AFTER_KILL = {
    "exp": "what is addressed to it waits, unclaimed once its lease lapses, "
    "until a process with its pid is back",
    "ops": "an operation it had taken goes to the other ops worker once its lease lapses",
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
        return [
            {
                "name": name,
                "title": title(name),
                "pid": process.popen.pid,
                "up": process.popen.poll() is None,
                "ended": ending(process.popen.returncode),
                "lines": list(self.latest[name]),
                "restartable": name == "server" or name in GROUP_OF,
            }
            for name, process in list(self.topology.processes.items())
        ]

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
                        self.say(f"{title(name)} is down: {why}.")
                    return
        raise Busy(f"no process this page started runs with pid {pid}")

    def aftermath(self, name: str) -> str | None:
        """What follows when process ``name`` dies (a prompt's death is a scenario's to tell)."""
        if name == "server":
            return AFTER_KILL["postgres" if self.topology.kind == "postgres" else "server"]
        return AFTER_KILL.get(GROUP_OF.get(name, ""))

    def restart(self, name: str) -> None:
        """Start the server, or a worker, again."""
        if name != "server" and name not in GROUP_OF:
            raise Busy(f"{name} is not a process this page starts")
        with self.act(f"{title(name)} is starting"):
            if (old := self.topology.processes.get(name)) and old.popen.poll() is None:
                raise Busy(f"{title(name)} is running already")
            self.begin(name)
            self.say(f"started {title(name)}")

    def begin(self, name: str) -> None:
        if name == "server":
            self.topology.server()
        else:
            self.topology.worker(GROUP_OF[name], name)

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
                self.say(f"started {title(name)}, for the scenario")

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

    def prompt(self, id: str, name: str) -> Child:
        self.on_loop(self.listing.add, id, ARTICLE, True)
        return super().prompt(id, name)


def title(name: str) -> str:
    """A process as the page names it: exp/lhs, ops/ops1, the server, a prompt."""
    return f"{GROUP_OF[name]}/{name}" if name in GROUP_OF else name
