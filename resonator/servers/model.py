"""The SDK's model of a Resonate server, indexed, and with a bounded memory.

``resonate.connections.local.ServerState`` is the SDK authors' in-process
model of the server: the stand-in serves it over HTTP, and embedded mode runs
on it through the SDK's ``LocalConnection``. Its answers are the SDK's own.

This subclass works around three defects of resonate-sdk 0.8.1's model, each
shown on the model itself by a strict xfail in ``tests/test_upstream.py``;
the day one passes, its part here can go:

- two lookups walked every promise held on each step (``preload`` and
  ``enqueue_settle``), so a step cost more the more promises there were;
  indexes give the same results, so a step costs the same after a million
  promises as after ten (``tests/test_model.py`` drives both with the same
  random requests). Shown by
  ``test_the_sdks_model_preloads_a_branch_without_reading_every_promise``;
- it takes a ``task.release``, ``task.fulfill`` or ``task.suspend`` at a
  version other than the task's, where the real server and resonate.sql
  refuse it: a run that had lost its lease (its process cut off for longer
  than the lease) released the task from under the run that had taken it
  since, whose next step then failed and released it in turn, and the two
  went round for as long as both lived. Here it is refused (``stale``), and
  a ``task.acquire`` of a pending task at another version likewise. Shown
  by ``test_the_sdks_model_refuses_a_release_at_a_version_not_the_tasks``;
- it renews the tasks of several origins in one ``task.heartbeat``, which the
  protocol and the real server refuse: what worked here failed there. Here
  it is refused too. Shown by ``test_the_sdks_model_refuses_a_heartbeat_across_origins``.

And it adds what the model lacks, which no defect asks for:

- it keeps the ``keep`` most recently settled computations, each with every
  promise and task under it, and forgets older ones (None: all of them);
- it answers two reads of the server's protocol that the model lacks, as the
  real server does: ``task.get``, so that a view of a computation can tell a
  step that runs from one that nobody has taken, and ``promise.search``, for
  the server's own ``resonate tree``;
- it counts how many times each task was handed out, which is how the real
  server numbers a task's versions (the model counts releases, lapses and
  resumes instead): ``wire.py`` says the stand-in's versions in that count.
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


def tasks(req: Any) -> list[dict[str, Any]]:
    """The well-formed task references of a heartbeat (the model judges the rest)."""
    refs = req.get("tasks") if isinstance(req, dict) else None
    refs = refs if isinstance(refs, list) else []
    return [t for t in refs if isinstance(t, dict) and isinstance(t.get("id"), str)]


class IndexedServerState(ServerState):
    def __init__(self, keep: int | None = None) -> None:
        super().__init__()
        self.promises: Promises = Promises()
        self.keep = keep
        self.kept: dict[str, None] = {}  # settled roots, oldest first
        self.claims: dict[str, int] = defaultdict(int)  # task -> times handed out

    def apply(self, now: int, req: Any) -> dict[str, Any]:
        kind, corr_id = (req.get("kind"), req.get("corrId")) if isinstance(req, dict) else ("", "")
        head = {"kind": kind, "corrId": corr_id}
        if kind == "task.get":
            return head | self.task_get(req)
        if kind == "promise.search":
            return head | self.promise_search(req)
        if kind == "task.heartbeat" and len({origin_of(t["id"]) for t in tasks(req)}) > 1:
            # The protocol's rule, which the real server applies and the model does not.
            return head | {"status": 400, "error": "All tasks must belong to the same origin"}
        if kind == "task.acquire" and self.stale(req, "pending"):
            return head | {"status": 409, "error": "Version mismatch"}
        if kind in ("task.release", "task.fulfill", "task.suspend") and self.stale(req, "acquired"):
            return head | {"status": 409, "error": "Task version mismatch or invalid state"}
        return super().apply(now, req)

    def stale(self, req: dict[str, Any], state: str) -> bool:
        """The task is in ``state``, but at another version: the request comes from an older one.

        A lease since lost, or (for an acquire) a message sent before the task
        was handed out and given back again.
        """
        task = self.tasks.get(require_task_id(req))
        return task is not None and task.state == state and req.get("version") != task.version

    def task_acquire(self, now: int, corr_id: Any, req: Any) -> dict[str, Any]:
        return self.claimed(super().task_acquire(now, corr_id, req))

    def task_create(self, now: int, corr_id: Any, req: Any) -> dict[str, Any]:
        return self.claimed(super().task_create(now, corr_id, req))

    def claimed(self, answer: dict[str, Any]) -> dict[str, Any]:
        """Count the claim if ``answer`` hands a task out."""
        task = answer.get("task")
        if answer["status"] < 300 and task is not None and task["state"] == "acquired":
            self.claims[task["id"]] += 1
        return answer

    def task_get(self, req: Any) -> dict[str, Any]:
        task = self.tasks.get(require_task_id(req))
        if task is None:
            return {"status": 404, "error": "not found"}
        return {"status": 200, "task": task.to_record()}

    def promise_search(self, req: dict[str, Any]) -> dict[str, Any]:
        """Promises whose tags include ``tags`` (and in ``state``), by id, a page at a time.

        As the real server pages them: ``limit`` of them (100 unless told, at
        most 1000) after the id ``cursor``, and the cursor for the next page
        when there is one. A search by ``resonate:origin`` reads one
        computation's promises, not all of them.
        """
        limit, state, cursor = req.get("limit", 100), req.get("state"), req.get("cursor")
        wanted = req.get("tags") or {}
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            return {"status": 400, "error": "Invalid 'limit': must be between 1 and 1000"}
        if not isinstance(wanted, dict) or not all(isinstance(v, str) for v in wanted.values()):
            return {"status": 400, "error": "Invalid 'tags': must map names to strings"}
        origin = wanted.get("resonate:origin")
        ids = self.promises.origins.get(origin, {}) if isinstance(origin, str) else self.promises
        found = sorted(
            id
            for id in ids
            if (cursor is None or id > cursor)
            and (state is None or self.promises[id].state == state)
            and wanted.items() <= self.promises[id].tags.items()
        )
        page = {"status": 200, "promises": [self.promises[id].to_record() for id in found[:limit]]}
        return page | ({"cursor": found[limit - 1]} if len(found) > limit else {})

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
                self.claims.pop(id, None)
            self.del_p_timeout(id)
