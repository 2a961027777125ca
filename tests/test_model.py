"""The indexed model answers as the SDK's own model does, and forgets what it should."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from resonate.connections.local import ServerState
from resonate.error import ServerError

from resonator.parser import parse
from resonator.servers.model import IndexedServerState
from tests.helpers import embedded

# The fast tier (`uv run pytest -m fast`): the lesson's logic, in-process.
pytestmark = pytest.mark.fast

IDS = ["a", "a:1", "a:2", "a:1.1", "b"]
TARGETS = ["poll://any@ops", "poll://uni@exp/lhs"]
LISTENERS = ["poll://uni@prompt/x", "poll://uni@prompt/y"]


def parent(id: str) -> str:
    return id.rsplit(".", 1)[0] if "." in id else id.split(":", maxsplit=1)[0]


@st.composite
def creations(draw: st.DrawFn) -> dict[str, Any]:
    """A promise.create's fields: a target (and so a task) more often than not."""
    id = draw(st.sampled_from(IDS))
    tags = {"resonate:origin": id.split(":", maxsplit=1)[0], "resonate:parent": parent(id)}
    tags["resonate:branch"] = draw(st.sampled_from([id, parent(id)]))
    if draw(st.integers(0, 3)):
        tags["resonate:target"] = draw(st.sampled_from(TARGETS))
    if draw(st.integers(0, 9)) == 0:
        tags["resonate:timer"] = "true"
    timeout = draw(st.sampled_from([10**12, 10**12, 5_000, 60_000, -1]))
    return {"id": id, "timeoutAt": timeout, "param": {"data": id}, "tags": tags}


class SameAnswers(RuleBasedStateMachine):
    """Random histories of requests and ticks, applied to both models side by side.

    Each step's answer (or error) and the messages it sends must be the same,
    and so must everything the models hold. Values are drawn from what the
    SDK's model holds (a task's version and holder), so that most requests
    can succeed: acquire, suspend on other promises, fulfill, lapse.
    """

    def __init__(self) -> None:
        super().__init__()
        self.theirs, self.ours = ServerState(), IndexedServerState()
        self.now = 1_000

    def both(self, request: dict[str, Any] | None) -> None:
        assert step(self.ours, self.now, request) == step(self.theirs, self.now, request), request

    def leased(self, request: dict[str, Any], state: str = "acquired") -> None:
        """A request at a version other than the task's: ours alone refuses it.

        A release, fulfill or suspend of a task held (in ``state`` acquired),
        or an acquire of one pending. As the real server does (see
        ``model.py``); nothing changes, so the models stay alike.
        """
        task = self.theirs.tasks.get(request["id"])
        if task is not None and task.state == state and request["version"] != task.version:
            answer, sent = step(self.ours, self.now, request)
            assert (answer["status"], sent) == (409, []), answer
        else:
            self.both(request)

    def pick(self, data: st.DataObject, state: str) -> str:
        """Mostly a task in ``state``, so that the request has a chance to succeed."""
        ids = [id for id, task in self.theirs.tasks.items() if task.state == state]
        likely = bool(ids) and data.draw(st.integers(0, 3)) > 0
        return data.draw(st.sampled_from(ids if likely else IDS))

    def version(self, data: st.DataObject, id: str) -> int:
        task = self.theirs.tasks.get(id)
        current = task.version if task else 0
        return data.draw(st.sampled_from([current, current, current + 1]))

    @rule(fields=creations())
    def create(self, fields: dict[str, Any]) -> None:
        self.both({"kind": "promise.create", **fields})

    @rule(fields=creations(), pid=st.sampled_from(["p", "q"]), ttl=st.sampled_from([1_000, 60_000]))
    def create_task(self, fields: dict[str, Any], pid: str, ttl: int) -> None:
        action = {"kind": "promise.create", "data": fields}
        self.both({"kind": "task.create", "pid": pid, "ttl": ttl, "action": action})

    @rule(data=st.data(), ttl=st.sampled_from([1_000, 60_000]))
    def acquire(self, data: st.DataObject, ttl: int) -> None:
        id = self.pick(data, "pending")
        version = self.version(data, id)
        request = {"kind": "task.acquire", "id": id, "version": version, "pid": "p", "ttl": ttl}
        self.leased(request, "pending")

    @rule(data=st.data(), awaited=st.lists(st.sampled_from(IDS), max_size=3))
    def suspend(self, data: st.DataObject, awaited: list[str]) -> None:
        id = self.pick(data, "acquired")
        actions = [
            {"kind": "promise.register_callback", "data": {"awaited": a, "awaiter": id}}
            for a in awaited
        ]
        self.leased(
            {
                "kind": "task.suspend",
                "id": id,
                "version": self.version(data, id),
                "actions": actions,
            }
        )

    @rule(data=st.data(), state=st.sampled_from(["resolved", "rejected"]))
    def fulfill(self, data: st.DataObject, state: str) -> None:
        id = self.pick(data, "acquired")
        settle = {"kind": "promise.settle", "data": {"id": id, "state": state, "value": {"v": 1}}}
        self.leased(
            {"kind": "task.fulfill", "id": id, "version": self.version(data, id), "action": settle}
        )

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        id = self.pick(data, "acquired")
        self.leased({"kind": "task.release", "id": id, "version": self.version(data, id)})

    @rule(data=st.data(), fields=creations())
    def fence(self, data: st.DataObject, fields: dict[str, Any]) -> None:
        id = self.pick(data, "acquired")
        action = {"kind": "promise.create", "data": fields}
        self.both(
            {"kind": "task.fence", "id": id, "version": self.version(data, id), "action": action}
        )

    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        id = self.pick(data, "acquired")
        task = [{"id": id, "version": self.version(data, id)}]
        self.both({"kind": "task.heartbeat", "pid": "p", "tasks": task})

    @rule(id=st.sampled_from(IDS), state=st.sampled_from(["resolved", "rejected_canceled"]))
    def settle(self, id: str, state: str) -> None:
        self.both({"kind": "promise.settle", "id": id, "state": state, "value": {"v": 2}})

    @rule(id=st.sampled_from(IDS), address=st.sampled_from(LISTENERS))
    def listen(self, id: str, address: str) -> None:
        self.both({"kind": "promise.register_listener", "awaited": id, "address": address})

    @rule(id=st.sampled_from(IDS))
    def get(self, id: str) -> None:
        self.both({"kind": "promise.get", "id": id})

    @rule(elapsed=st.sampled_from([0, 100, 1_500, 6_000, 31_000]))
    def tick(self, elapsed: int) -> None:
        self.now += elapsed
        self.both(None)

    @invariant()
    def claims_are_versions_as_the_real_server_counts_them(self) -> None:
        """Each release, lapse or resume that the model counts follows one claim.

        So a task's claims are its version in the model's count, and one more
        while a claim has not been followed by one (the task is held, or
        suspended, or was fulfilled while so).
        """
        for id, task in self.ours.tasks.items():
            unfollowed = self.ours.claims.get(id, 0) - task.version
            assert unfollowed == {"pending": 0, "acquired": 1, "suspended": 1}.get(
                task.state, unfollowed
            ), (id, task)
            assert unfollowed in (0, 1), (id, task)

    @invariant()
    def the_same_state(self) -> None:
        def held(state: ServerState) -> Any:
            promises = {
                id: (p.to_record(), sorted(p.awaiters), sorted(p.subscribers))
                for id, p in state.promises.items()
            }
            tasks = {id: (t.to_record(), sorted(t.resumes)) for id, t in state.tasks.items()}
            timeouts = sorted((t.id, t.timeout) for t in state.p_timeouts)
            leases = sorted((t.id, t.typ, t.timeout) for t in state.t_timeouts)
            return promises, tasks, timeouts, leases

        assert held(self.ours) == held(self.theirs)


def step(state: ServerState, now: int, request: dict[str, Any] | None) -> Any:
    """What one step gives back: the answer (or the error) and the messages it sent."""
    state.outgoing = []
    try:
        if request is None:
            state.tick(now)
            answer: Any = None
        else:
            answer = state.apply(now, copy.deepcopy(request))
    except ServerError as error:
        answer = ("error", error.code, error.message)
    return answer, [(m.address, m.message) for m in state.outgoing]


SameAnswers.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
test_the_indexed_model_answers_as_the_sdks_own = SameAnswers.TestCase


def test_only_the_last_computations_are_kept() -> None:
    async def scenario() -> tuple[list[bool], int]:
        async with embedded(keep=2) as (resonate, _):
            for i in range(5):
                assert await resonate.run(f"c{i}", "=", parse("(1 + 2) * 3")).result() == 9
            state = resonate._network.state  # type: ignore[attr-defined]
            kept = [f"c{i}" in state.promises for i in range(5)]
            return kept, len(state.promises)

    kept, promises = asyncio.run(scenario())
    assert kept == [False, False, False, True, True]
    assert promises == 2 * 7  # each: the root, four sub-expressions, two operators
