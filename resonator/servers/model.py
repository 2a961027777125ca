"""The SDK's model of a Resonate server, indexed, and with a bounded memory.

``resonate.connections.local.ServerState`` is the SDK authors' in-process
model of the server: the stand-in serves it over HTTP, and embedded mode runs
on it through the SDK's ``LocalConnection``. Its answers are the SDK's own.
This subclass changes three things, none of them an answer:

- two lookups walked every promise held on each step (``preload`` and
  ``enqueue_settle``); they use indexes that give the same results, so a
  step costs the same after a million promises as after ten;
- it keeps the ``keep`` most recently settled computations, each with every
  promise and task under it, and forgets older ones (None: all of them);
- it answers ``task.get``, a read of the server's protocol that the model
  lacks, so that a view of a computation can tell a step that runs from one
  that nobody has taken.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from resonate.connections.local import ServerState, require_task_id
from resonate.ids import ORIGIN_SEP, origin_of

if TYPE_CHECKING:
    from collections.abc import Iterable

    from resonate.connections.local import DurablePromise


class Awaiters(set[str]):
    """A promise's awaiters (the tasks suspended on it), also indexed by task."""

    def __init__(self, promise: str, waits_on: dict[str, set[str]], tasks: Iterable[str]) -> None:
        super().__init__()
        self.promise, self.waits_on = promise, waits_on
        for task in tasks:
            self.add(task)

    def add(self, task: str) -> None:
        super().add(task)
        self.waits_on[task].add(self.promise)

    def discard(self, task: object) -> None:
        super().discard(task)
        if isinstance(task, str) and (promises := self.waits_on.get(task)) is not None:
            promises.discard(self.promise)

    def clear(self) -> None:
        for task in self:
            if (promises := self.waits_on.get(task)) is not None:
                promises.discard(self.promise)
        super().clear()


class Promises(dict[str, "DurablePromise"]):
    """The model's promises by id, also by ``resonate:branch`` tag and by origin.

    Every task the model hands out carries a preload: the other promises on
    its branch. Tags never change once a promise exists, so the branch index
    gives the same list, in the same order, as the model's scan of them all.
    """

    def __init__(self) -> None:
        super().__init__()
        self.branches: dict[str | None, dict[str, None]] = defaultdict(dict)
        self.origins: dict[str, dict[str, None]] = defaultdict(dict)
        self.waits_on: dict[str, set[str]] = defaultdict(set)  # task -> promises it awaits

    def __setitem__(self, id: str, promise: DurablePromise) -> None:
        if id not in self:
            self.branches[promise.tags.get("resonate:branch")][id] = None
            self.origins[origin_of(id)][id] = None
        promise.awaiters = Awaiters(id, self.waits_on, promise.awaiters)
        super().__setitem__(id, promise)

    def __delitem__(self, id: str) -> None:
        promise = self.pop(id)
        promise.awaiters.clear()
        self.waits_on.pop(id, None)
        branch = promise.tags.get("resonate:branch")
        self.branches[branch].pop(id, None)
        if not self.branches[branch]:
            del self.branches[branch]
        origin = origin_of(id)
        self.origins[origin].pop(id, None)
        if not self.origins[origin]:
            del self.origins[origin]


class IndexedServerState(ServerState):
    def __init__(self, keep: int | None = None) -> None:
        super().__init__()
        self.promises: Promises = Promises()
        self.keep = keep
        self.kept: dict[str, None] = {}  # settled roots, oldest first

    def apply(self, now: int, req: Any) -> dict[str, Any]:
        if isinstance(req, dict) and req.get("kind") == "task.get":
            return self.task_get(req.get("corrId"), req)
        return super().apply(now, req)

    def task_get(self, corr_id: Any, req: Any) -> dict[str, Any]:
        task = self.tasks.get(require_task_id(req))
        if task is None:
            return {"kind": "task.get", "corrId": corr_id, "status": 404, "error": "not found"}
        return {"kind": "task.get", "corrId": corr_id, "status": 200, "task": task.to_record()}

    def preload(self, promise_id: str) -> list[dict[str, Any]]:
        promise = self.promises.get(promise_id)
        branch = promise.tags.get("resonate:branch") if promise else None
        if branch is None:
            return []
        return [
            self.promises[id].to_record()
            for id in self.promises.branches[branch]
            if id != promise_id
        ]

    def enqueue_settle(self, promise_id: str) -> None:
        task = self.tasks.get(promise_id)
        if task is None or task.state == "fulfilled":
            super().enqueue_settle(promise_id)  # on these paths it scans nothing
        else:
            # The model's own steps, but for the last: it dropped this task
            # from the awaiters of every promise held, and only the promises
            # this task awaits hold it.
            task.state = "fulfilled"
            task.pid = None
            task.ttl = None
            task.resumes.clear()
            self.del_t_timeout(promise_id)
            for awaited in self.promises.waits_on.pop(promise_id, set()):
                self.promises[awaited].awaiters.discard(promise_id)
        self.remember(promise_id)

    def remember(self, promise_id: str) -> None:
        """A computation's root settled: keep it, and forget the oldest beyond ``keep``."""
        if self.keep is None or ORIGIN_SEP in promise_id:
            return
        promise = self.promises.get(promise_id)
        if promise is not None and promise.state != "pending":
            self.kept[promise_id] = None
        while len(self.kept) > self.keep:
            oldest = next(iter(self.kept))
            del self.kept[oldest]
            self.forget(oldest)

    def forget(self, origin: str) -> None:
        """Every promise and task of one computation, and the timeouts that name them."""
        for id in list(self.promises.origins.get(origin, ())):
            del self.promises[id]
            if self.tasks.pop(id, None):
                self.del_t_timeout(id)
            self.del_p_timeout(id)
