"""The SDK's model of a Resonate server, indexed so that no step scans every promise.

``resonate.connections.local.ServerState`` is the SDK authors' in-process
model of the server: the stand-in serves it over HTTP, and embedded mode runs
on it through the SDK's ``LocalConnection``. Its answers are the SDK's own;
this subclass only replaces lookups that walk every promise it holds with
indexes that give the same answers.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from resonate.connections.local import DurablePromise, ServerState


class BranchIndex(dict[str, DurablePromise]):
    """The model's promises by id, also listed by their ``resonate:branch`` tag.

    Every task the model hands out carries a preload: the promises on the
    same branch. The model finds them by scanning every promise it holds, so
    each step got slower as promises piled up (it was most of the stand-in's
    time after a few thousand). Tags never change once a promise exists, so
    this index gives the same list, in the same order, at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.branches: dict[str | None, list[str]] = defaultdict(list)

    def __setitem__(self, id: str, promise: DurablePromise) -> None:
        if id not in self:
            self.branches[promise.tags.get("resonate:branch")].append(id)
        super().__setitem__(id, promise)


class IndexedServerState(ServerState):
    def __init__(self) -> None:
        super().__init__()
        self.promises: BranchIndex = BranchIndex()

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
