"""A worker's slots: how many tasks it runs at once, and work that waits for one.

The SDK runs at most ``max_concurrent_tasks`` tasks at once (``--slots``); an
``execute`` message that arrives while every slot is busy waits in the
process for one, before the task is even asked for (``task.acquire``). Meanwhile
the server, seeing the task still pending after its retry timeout, sends it
again: to the same process (a unicast address), or to any member of the
group (anycast), perhaps this one. Without ``Slots``, each copy waited in
line for a slot of its own, only to be refused the task that the first copy
took; on a big tree the line grew faster than it emptied, every second more
copies of the same work.

``Slots`` lets one message per task (and version) wait here: a copy that
comes while the first is waiting or being acquired is dropped, since the
first takes the task, or learns that another process did. Once the acquire is
answered, whichever way, a copy is let through again: if the acquire failed
for want of the server, the copy is how the task is tried again.

It also counts the slots free, for a process that asks for its work
(Postgres): it takes no more of its group's work than it can start now, and
leaves the rest to the group's other members.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec
from resonate.connections import HttpConnection

if TYPE_CHECKING:
    from collections.abc import Callable

    from resonate.retry import Backoff

log = logging.getLogger("resonator")


class _Task(msgspec.Struct):
    id: str
    version: int


class _Data(msgspec.Struct):
    task: _Task | None = None  # an execute message's
    id: str | None = None  # a task.acquire request's
    version: int | None = None


class _Envelope(msgspec.Struct):
    kind: str
    data: _Data


type Key = tuple[str, int]  # a task, and its version


class Slots:
    """The ``size`` tasks a process runs at once; the messages waiting for one."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.waiting: set[Key] = set()  # execute messages let through, not yet acquired
        self.running: Callable[[], int] = lambda: 0  # tasks in hand (the heartbeat knows)

    def free(self) -> int:
        """Slots that no task in hand and no message waiting takes."""
        return max(0, self.size - len(self.waiting) - self.running())

    def gate(self, deliver: Callable[[str], None]) -> Callable[[str], None]:
        """``deliver``, for every message but a copy of an execute that waits here already."""

        def gated(message: str) -> None:
            key = self.execute(message)
            if key is not None:
                if key in self.waiting:
                    log.debug("dropped a copy of execute %s: it waits here already", key)
                    return
                self.waiting.add(key)
            try:
                deliver(message)
            except BaseException:
                # Not handed on: no acquire will end its wait, so a copy must get in.
                if key is not None:
                    self.waiting.discard(key)
                raise

        return gated

    def acquiring(self, request: str) -> Key | None:
        """The task a request acquires (its answer ends the wait: ``acquired``), or None."""
        if '"task.acquire"' not in request:
            return None
        try:
            envelope = msgspec.json.decode(request, type=_Envelope)
        except msgspec.DecodeError:
            return None
        data = envelope.data
        if envelope.kind != "task.acquire" or data.id is None or data.version is None:
            return None
        return data.id, data.version

    def acquired(self, key: Key) -> None:
        """The acquire of ``key`` was answered, or failed: a copy may come in again."""
        self.waiting.discard(key)

    @staticmethod
    def execute(message: str) -> Key | None:
        """The task an execute message offers, or None for any other message."""
        try:
            envelope = msgspec.json.decode(message, type=_Envelope)
        except msgspec.DecodeError:
            return None  # not ours to judge: the SDK says what is wrong with it
        task = envelope.data.task
        return (task.id, task.version) if envelope.kind == "execute" and task else None


class Acquiring(HttpConnection):
    """The SDK's HTTP connection, telling ``Slots`` when each acquire is answered."""

    def __init__(self, url: str, slots: Slots, auth: str | None, backoff: Backoff) -> None:
        super().__init__(url, auth=auth, backoff=backoff)
        self.slots = slots

    async def send(self, req: str, headers: dict[str, str] | None = None) -> str:
        key = self.slots.acquiring(req)
        try:
            return await super().send(req, headers)
        finally:
            if key is not None:
                self.slots.acquired(key)
