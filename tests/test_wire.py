"""The stand-in answers and messages as the real server does, field by field.

The same requests go to ``resonate dev`` and to the stand-in, each fresh,
and what comes back must be the same, but for times, the server's URL, and
the words of an error (the model's, not the server's: both are one string).
The versions in the requests are the real server's, so the stand-in must
number its tasks as the real server does for the answers to agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import pytest
from resonate_base import PROTOCOL_VERSION

from resonator.harness.processes import Topology
from tests.helpers import available

LATER, PAST = 4_102_444_800_000, 1  # timeoutAt: in 2100, and long gone
TIMES = ("createdAt", "settledAt", "timeoutAt")
# Three processes, and what each must be sent. (Each once: a task nobody
# took is sent again every second, and the copies are left out.)
STREAMS = {
    "a": [("execute", "w", 0), ("execute", "w", 1), ("execute", "w", 2)],
    "b": [("execute", "w:1", 0)],
    "listener": [("unblock", "w:1", "resolved")],
}
# A step that waits for the next message to one of them. The real server
# sends messages from a scan, every 10 ms in the tests: without these waits,
# a message superseded before the scan (the same task, a newer version)
# would not be sent at all.
SENT = "(sent)"


def tags(id: str, target: str | None = None) -> dict[str, str]:
    origin = id.split(":", maxsplit=1)[0]
    tags = {"resonate:origin": origin, "resonate:branch": id, "resonate:parent": origin}
    return tags | ({"resonate:target": target} if target else {})


def action(kind: str, **data: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "head": {"corrId": f"inner-{kind}", "version": PROTOCOL_VERSION},
        "data": data,
    }


def callback(awaited: str) -> dict[str, Any]:
    return action("promise.register_callback", awaited=awaited, awaiter="w")


VALUE = {"headers": {}, "data": "Mw=="}  # 3
PARAM = {"headers": {}, "data": "eyJmdW5jIjogIisifQ=="}
# A task's life: created, taken at the wrong version and the right one,
# given back and taken again, suspended on a child, resumed when the child
# settles, taken again, redirected, fulfilled; and a few things not found.
REQUESTS: list[tuple[str, dict[str, Any]]] = [
    (
        "promise.create",
        {"id": "w", "timeoutAt": LATER, "param": PARAM, "tags": tags("w", "poll://uni@g/a")},
    ),
    (SENT, {"to": "a"}),
    (
        "promise.create",
        {"id": "w", "timeoutAt": LATER, "param": PARAM, "tags": tags("w", "poll://uni@g/a")},
    ),
    ("promise.create", {"id": "bare", "timeoutAt": LATER, "tags": tags("bare")}),
    (
        "promise.create",
        {"id": "old", "timeoutAt": PAST, "param": {}, "tags": tags("old", "poll://uni@g/c")},
    ),
    ("task.get", {"id": "old"}),
    ("promise.get", {"id": "nothing"}),
    ("task.get", {"id": "nothing"}),
    ("task.get", {"id": "w"}),
    ("task.acquire", {"id": "w", "version": 1, "pid": "a", "ttl": 60_000}),
    ("task.acquire", {"id": "w", "version": 0, "pid": "a", "ttl": 60_000}),
    ("task.acquire", {"id": "w", "version": 1, "pid": "a", "ttl": 60_000}),
    ("task.heartbeat", {"pid": "a", "tasks": [{"id": "w", "version": 1}]}),
    ("task.release", {"id": "w", "version": 0}),
    ("task.release", {"id": "w", "version": 1}),
    (SENT, {"to": "a"}),
    ("task.get", {"id": "w"}),
    ("task.acquire", {"id": "w", "version": 1, "pid": "a", "ttl": 60_000}),
    (
        "task.fence",
        {
            "id": "w",
            "version": 1,
            "action": action(
                "promise.create", id="w:2", timeoutAt=LATER, param={}, tags=tags("w:2")
            ),
        },
    ),
    (
        "task.fence",
        {
            "id": "w",
            "version": 2,
            "action": action(
                "promise.create",
                id="w:1",
                timeoutAt=LATER,
                param=PARAM,
                tags=tags("w:1", "poll://uni@g/b"),
            ),
        },
    ),
    (SENT, {"to": "b"}),
    ("task.suspend", {"id": "w", "version": 2, "actions": [callback("w:1")]}),
    ("task.get", {"id": "w"}),
    ("promise.register_listener", {"awaited": "w:1", "address": "poll://uni@g/listener"}),
    ("promise.settle", {"id": "w:1", "state": "resolved", "value": VALUE}),
    (SENT, {"to": "a"}),
    (SENT, {"to": "listener"}),
    ("promise.settle", {"id": "w:1", "state": "rejected", "value": {}}),
    ("task.get", {"id": "w"}),
    ("task.get", {"id": "w:1"}),
    ("task.acquire", {"id": "w", "version": 2, "pid": "a", "ttl": 60_000}),
    ("task.suspend", {"id": "w", "version": 3, "actions": [callback("w:1")]}),
    (
        "task.fulfill",
        {
            "id": "w",
            "version": 3,
            "action": action("promise.settle", id="w", state="resolved", value=VALUE),
        },
    ),
    (
        "task.fulfill",
        {
            "id": "w",
            "version": 3,
            "action": action("promise.settle", id="w", state="resolved", value=VALUE),
        },
    ),
    ("task.get", {"id": "w"}),
    ("promise.get", {"id": "w"}),
    (
        "task.create",
        {
            "pid": "p",
            "ttl": 60_000,
            "action": action(
                "promise.create",
                id="made",
                timeoutAt=LATER,
                param={},
                tags=tags("made", "poll://uni@g/c"),
            ),
        },
    ),
    (
        "task.create",
        {
            "pid": "p",
            "ttl": 60_000,
            "action": action(
                "promise.create",
                id="made",
                timeoutAt=LATER,
                param={},
                tags=tags("made", "poll://uni@g/c"),
            ),
        },
    ),
    ("task.release", {"id": "made", "version": 0}),
    ("task.get", {"id": "made"}),
    ("task.release", {"id": "nothing", "version": 0}),
]


async def sent(messages: list[Any], count: int) -> None:
    """Once ``messages`` holds ``count`` of them."""
    while len(messages) < count:
        await asyncio.sleep(0.01)


# Every answer, in order, and the messages each process was sent.
type Conversation = tuple[list[Any], dict[str, list[Any]]]


def timeless(value: Any) -> Any:
    """``value`` with each time in it replaced by whether it is there."""
    if isinstance(value, dict):
        return {k: ("a time" if k in TIMES else timeless(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def comparable(status: int, body: Any) -> Any:
    """An answer, its times aside, and its error's words (a string on both)."""
    if isinstance(body.get("data"), str):
        body["data"] = "an error's words"
    return status, timeless(body)


async def conversation(url: str) -> Conversation:
    """Every answer to REQUESTS, in order, and the messages each process was sent."""
    got: dict[str, list[Any]] = {pid: [] for pid in STREAMS}
    async with aiohttp.ClientSession() as session:

        async def listen(pid: str) -> None:
            async with session.get(f"{url}/poll/g/{pid}") as stream:
                opened.release()
                async for line in stream.content:
                    if line.startswith(b"data:") and (m := json.loads(line[5:])) not in got[pid]:
                        got[pid].append(m)  # once: a task nobody took is sent again

        opened = asyncio.Semaphore(0)
        listeners = [asyncio.create_task(listen(pid)) for pid in STREAMS]
        for _ in STREAMS:
            await asyncio.wait_for(opened.acquire(), 30)
        answers: list[Any] = []
        awaited = dict.fromkeys(STREAMS, 0)
        for kind, data in REQUESTS:
            if kind == SENT:
                awaited[data["to"]] += 1
                with contextlib.suppress(TimeoutError):  # the test then says what is missing
                    await asyncio.wait_for(sent(got[data["to"]], awaited[data["to"]]), 30)
                continue
            head = {"corrId": f"c-{len(answers)}", "version": PROTOCOL_VERSION}
            body = {"kind": kind, "head": head, "data": data}
            async with session.post(f"{url}/", json=body) as response:
                answers.append(comparable(response.status, await response.json()))
        for listener in listeners:
            listener.cancel()
    return answers, got


@pytest.fixture(scope="module")
def conversations() -> tuple[Conversation, Conversation]:
    """The real server's conversation, then the stand-in's."""
    available("resonate")
    talks = []
    for server in ("resonate", "stand-in"):
        with Topology(server) as topology:
            topology.server()
            talks.append(asyncio.run(conversation(topology.url)))
    return talks[0], talks[1]


def test_the_stand_in_answers_as_the_real_server_does(
    conversations: tuple[Conversation, Conversation],
) -> None:
    (theirs, _), (ours, _) = conversations
    requests = [(kind, data) for kind, data in REQUESTS if kind != SENT]
    for (kind, data), their, our in zip(requests, theirs, ours, strict=True):
        assert our == their, f"{kind} {json.dumps(data)}"


def test_the_stand_in_sends_the_messages_the_real_server_sends(
    conversations: tuple[Conversation, Conversation],
) -> None:
    (_, theirs), (_, ours) = conversations
    for messages in (theirs, ours):
        for pid, expected in STREAMS.items():
            got = [(m["kind"], *about(m)) for m in messages[pid]]
            assert got == expected, (pid, messages[pid])
    for pid in STREAMS:
        assert [urlless(m) for m in ours[pid]] == [urlless(m) for m in theirs[pid]], pid


def about(message: dict[str, Any]) -> tuple[str, Any]:
    if message["kind"] == "execute":
        return message["data"]["task"]["id"], message["data"]["task"]["version"]
    return message["data"]["promise"]["id"], message["data"]["promise"]["state"]


def urlless(message: dict[str, Any]) -> Any:
    """A message, its times aside, and its server's URL (each names its own)."""
    if "serverUrl" in message["head"]:
        assert message["head"]["serverUrl"].startswith("http://")
        message["head"]["serverUrl"] = "the server's URL"
    return timeless(message)
