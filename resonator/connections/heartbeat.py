"""Leases that hold while a process works on several computations at once.

Works around two defects of resonate-sdk 0.8.1's ``AsyncHeartbeat``
(``resonate/heartbeat.py``):

- It renews every task the process holds in one ``task.heartbeat``. The
  protocol refuses a heartbeat whose tasks belong to more than one origin
  (``400 All tasks must belong to the same origin``: the real server does, and
  so does the stand-in), so a worker holding tasks of two computations renews
  none of its leases, and says so only in the SDK's own log.
- It knows a task by its id alone. When a lease lapses and the server hands
  the task out again, the run that had lost it, ending, stops the heartbeat
  of the new run of the same task, whose lease then lapses too.

Here each origin gets a heartbeat of its own, a task is renewed while any
run of it is under way (at its newest version), and a heartbeat the server
refuses is said once at the default level. (And a task's first renewal comes
when it is due, half a lease after it began, not at once: a fifth of the
requests of a short computation were heartbeats that renewed nothing.)
Delete this module, and the ``heartbeat=`` given in
``connections/__init__.py``, once the SDK does both.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from resonate.error import ServerError
from resonate.heartbeat import AsyncHeartbeat
from resonate.ids import origin_of
from resonate.send import TaskRef

if TYPE_CHECKING:
    from resonate.send import TaskHeartbeating

log = logging.getLogger("resonator")


class HeartbeatPerOrigin(AsyncHeartbeat):
    """``AsyncHeartbeat``, one request per origin, counting the runs of each task."""

    def __init__(self, pid: str, interval_ms: int, sender: TaskHeartbeating) -> None:
        super().__init__(pid, interval_ms, sender)
        self.runs: Counter[str] = Counter()  # task id -> runs under way
        self.refused = False  # a refusal was said already

    def start(self, task_id: str, task_version: int) -> None:
        self.runs[task_id] += 1
        super().start(task_id, max(task_version, self.active_tasks.get(task_id, 0)))

    def stop(self, task_id: str) -> None:
        self.runs[task_id] -= 1
        if self.runs[task_id] <= 0:
            del self.runs[task_id]
            super().stop(task_id)

    async def _run(self) -> None:
        # The SDK's loop, but for the grouping, and for its first beat: not at
        # once, but after an interval. The lease a task was acquired with
        # lasts the whole TTL, and the interval is half of it.
        while True:
            await self._sleeper(self.interval_ms / 1000)
            origins: defaultdict[str, list[TaskRef]] = defaultdict(list)
            for task_id, version in self.active_tasks.items():
                origins[origin_of(task_id)].append(TaskRef(id=task_id, version=version))
            for tasks in origins.values():
                await self.beat(tasks)

    async def beat(self, tasks: list[TaskRef]) -> None:
        try:
            await self.sender.task_heartbeat(self.pid, tasks)
        except ServerError as error:  # as the SDK does, keep beating
            log.log(
                logging.DEBUG if self.refused else logging.WARNING,
                "the Resonate server refused a heartbeat (%s %s): a lease may lapse",
                error.code,
                error.message,
            )
            self.refused = True
        except Exception as error:  # the connection is closing, or the server is away
            log.debug("a heartbeat failed: %r", error)
