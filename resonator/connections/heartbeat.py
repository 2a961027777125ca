"""Leases that hold while a process works on several computations at once, and across short cuts.

Works around three defects of resonate-sdk 0.8.1's ``AsyncHeartbeat``
(``resonate/heartbeat.py``):

- It renews every task the process holds in one ``task.heartbeat``. The
  protocol refuses a heartbeat whose tasks belong to more than one origin
  (``400 All tasks must belong to the same origin``: the real server does, and
  so does the stand-in), so a worker holding tasks of two computations renews
  none of its leases, and says so only in the SDK's own log. Shown by
  ``tests/test_upstream.py::test_the_sdks_heartbeat_keeps_the_leases_of_two_computations``.
- It knows a task by its id alone. When a lease lapses and the server hands
  the task out again, the run that had lost it, ending, stops the heartbeat
  of the new run of the same task, whose lease then lapses too. Shown by
  ``tests/test_upstream.py::test_the_sdks_heartbeat_keeps_a_task_taken_again_when_its_last_run_ends``.
- It waits for each beat's answer before it sends the next, half a lease
  later. A beat sent into a cut network waits in TCP's retransmissions, which
  back off to seconds apart, long after the network is back: a cut of a
  little over a quarter of the lease, at the wrong moment, lapsed it. No
  test shows this one on the SDK's own heartbeat: it takes a network cut at
  the wrong moment of a beat. With this heartbeat, ``tests/test_machines.py::
  test_a_cut_shorter_than_half_the_lease_costs_no_second_run`` cuts a
  worker off for most of half a lease, and no lease lapses.

Here each origin gets a heartbeat of its own, sent every quarter lease; a
beat that has no answer within a sixth of the lease is left to itself and
another is sent at once, on a connection of its own; of the beats left
waiting, the oldest is cancelled past four, since after a long cut TCP may
not try them again for seconds. So once the network is back, a beat gets
through within a sixth of a lease, and a cut shorter than
half the lease never lets a lease lapse (docs/distributed.md). A task is
renewed while any run of it is under way (at its newest version), and a
heartbeat the server refuses is said once at the default level.

One speed-up rides in the loop that replaces the SDK's, and is no fix: a
task's first renewal comes when it is due, not at once (a fifth of the
requests of a short computation were heartbeats that renewed nothing; the
first line of ``_run``). Delete this module, and the ``heartbeat`` of
``connections/__init__.py``, once the two xfails above pass and the SDK
resends a beat that hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from resonate.error import ServerError
from resonate.heartbeat import AsyncHeartbeat
from resonate.ids import origin_of
from resonate.send import TaskRef

if TYPE_CHECKING:
    from collections.abc import Callable

    from resonate.send import TaskHeartbeating

log = logging.getLogger("resonator")

BEATS = 4  # heartbeats per lease, while the server answers
PATIENCE = 6  # a beat with no answer after a sixth of a lease is sent again
# Beats of one origin left waiting for an answer, at most: in a cut shorter
# than half a lease (three patiences) three go unanswered, and the fourth,
# sent as the cut ends, gets through. Past that, the oldest is given up.
WAITING = 4


class HeartbeatPerOrigin(AsyncHeartbeat):
    """``AsyncHeartbeat``, a beat per origin, sent again when it hangs; counting runs per task."""

    def __init__(self, pid: str, lease_ms: int, sender: TaskHeartbeating) -> None:
        super().__init__(pid, max(lease_ms // BEATS, 1), sender)
        self.patience = lease_ms / PATIENCE / 1000  # seconds
        self.runs: Counter[str] = Counter()  # task id -> runs under way
        # Beats without an answer yet, by origin, oldest first.
        self.waiting: defaultdict[str, dict[asyncio.Task[None], None]] = defaultdict(dict)
        self.refused = False  # a refusal was said already
        self.stopped: Callable[[], None] = lambda: None  # told when a task's run ends

    def start(self, task_id: str, task_version: int) -> None:
        self.runs[task_id] += 1
        super().start(task_id, max(task_version, self.active_tasks.get(task_id, 0)))

    def stop(self, task_id: str) -> None:
        self.runs[task_id] -= 1
        if self.runs[task_id] <= 0:
            del self.runs[task_id]
            super().stop(task_id)
        self.stopped()

    async def _run(self) -> None:
        # The SDK's loop, but for the grouping and the patience, and for its
        # first beat: not at once, but after an interval. The lease a task was
        # acquired with lasts the whole TTL.
        while True:
            await self._sleeper(self.interval_ms / 1000)
            origins = {origin_of(task_id) for task_id in self.active_tasks}
            await asyncio.gather(*(self.renew(origin) for origin in origins))

    def tasks(self, origin: str) -> list[TaskRef]:
        """The tasks of ``origin`` in hand now, each at its newest version."""
        return [
            TaskRef(id=task_id, version=version)
            for task_id, version in self.active_tasks.items()
            if origin_of(task_id) == origin
        ]

    async def renew(self, origin: str) -> None:
        """Beat for the tasks of ``origin`` until one beat is answered.

        A beat without an answer within ``patience`` is left to itself (its
        request may wait on a dead connection, and so may cancelling it), and
        another goes out, on a connection of its own. With ``WAITING`` beats
        left waiting, the oldest is cancelled, not waited for: after a long
        cut, TCP may not try a beat's request again for as long as the cut
        lasted, and beats that waited on would hold back the next task's.
        """
        answered = asyncio.Event()
        while not answered.is_set() and (tasks := self.tasks(origin)):
            waiting = self.waiting[origin]
            if len(waiting) >= WAITING:
                oldest = next(iter(waiting))
                del waiting[oldest]
                oldest.cancel()
            beat = asyncio.ensure_future(self.beat(tasks, answered))
            waiting[beat] = None
            beat.add_done_callback(lambda done: self.forget(origin, done))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answered.wait(), self.patience)

    def forget(self, origin: str, beat: asyncio.Task[None]) -> None:
        """A beat has ended, answered or not: it waits no more."""
        waiting = self.waiting.get(origin)
        if waiting is not None:
            waiting.pop(beat, None)
            if not waiting:
                del self.waiting[origin]

    async def beat(self, tasks: list[TaskRef], answered: asyncio.Event) -> None:
        try:
            await self.sender.task_heartbeat(self.pid, tasks)
        except ServerError as error:  # answered, if not as hoped: as the SDK does, keep beating
            log.log(
                logging.DEBUG if self.refused else logging.WARNING,
                "the Resonate server refused a heartbeat (%s %s): a lease may lapse",
                error.code,
                error.message,
            )
            self.refused = True
        except Exception as error:  # the connection is closing, or the server is away
            log.debug("a heartbeat failed: %r", error)
            return
        answered.set()
