"""The stand-in server on its own: raw envelopes over HTTP, messages over SSE."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.test_utils import TestServer
from resonate.connections.local import ServerState

from resonator.servers.devserver import TICK_SECONDS, DevServer
from resonator.servers.model import IndexedServerState
from tests.helpers import envelope

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def create(id: str, target: str) -> dict[str, Any]:
    tags = {"resonate:target": target, "resonate:origin": id, "resonate:branch": id}
    tags |= {"resonate:parent": id, "resonate:scope": "global"}
    return envelope("promise.create", id=id, timeoutAt=2**62, param={}, tags=tags)


class StandIn:
    """A stand-in served in this process, and an HTTP session to it."""

    def __init__(self, dev: DevServer, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.dev, self.server, self.session = dev, server, session

    async def send(self, body: dict[str, Any] | bytes) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(self.server.make_url("/"), data=data) as response:
            return response.status, await response.json()

    @asynccontextmanager
    async def stream(self, group: str, pid: str) -> AsyncIterator[asyncio.Queue[Any]]:
        """The messages for group/pid, as they arrive (None when the stream ends)."""
        messages: asyncio.Queue[Any] = asyncio.Queue()
        opened = asyncio.Event()

        async def read() -> None:
            async with self.session.get(self.server.make_url(f"/poll/{group}/{pid}")) as response:
                opened.set()
                async for line in response.content:
                    if line.startswith(b"data: "):
                        messages.put_nowait(json.loads(line[6:]))
            messages.put_nowait(None)

        reader = asyncio.create_task(read())
        await opened.wait()
        try:
            yield messages
        finally:
            reader.cancel()


@asynccontextmanager
async def devserver() -> AsyncIterator[StandIn]:
    dev = DevServer()
    server = TestServer(dev.app(), host="127.0.0.1")
    await server.start_server()
    dev.url = str(server.make_url("")).rstrip("/")
    try:
        async with aiohttp.ClientSession() as session:
            yield StandIn(dev, server, session)
    finally:
        await server.close()


async def next_message(messages: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(messages.get(), timeout=10)


def test_envelopes_round_trip() -> None:
    async def scenario() -> None:
        async with devserver() as client:
            status, body = await client.send(create("p1", "poll://any@nobody"))
            assert status == 200
            assert body["kind"] == "promise.create"
            assert body["head"]["corrId"] == "c-promise.create"
            assert body["head"]["status"] == 200  # as the real server answers; the model, 201
            assert body["data"]["promise"]["state"] == "pending"
            assert body["data"]["promise"]["value"] == {}  # the model's null

            status, body = await client.send(envelope("promise.get", id="p1"))
            assert (status, body["data"]["promise"]["id"]) == (200, "p1")

            status, body = await client.send(envelope("promise.get", id="nope"))
            assert (status, body["head"]["status"]) == (404, 404)

            async with client.session.get(client.server.make_url("/health")) as response:
                assert response.status == 200

    asyncio.run(scenario())


def test_malformed_requests_get_a_4xx_with_a_message() -> None:
    async def scenario() -> None:
        async with devserver() as client:
            status, body = await client.send(b"{not json")
            assert status == 400
            assert "invalid JSON" in body["error"]

            status, body = await client.send(envelope("promise.explode"))
            assert status == 400
            assert body["data"] == "unknown request kind: promise.explode"

            status, body = await client.send(envelope("promise.get"))
            assert status == 400
            assert "id" in body["data"]

            # And it still serves.
            status, _ = await client.send(create("fine", "poll://any@nobody"))
            assert status == 200

    asyncio.run(scenario())


def test_unicast_reaches_only_that_pid() -> None:
    async def scenario() -> None:
        async with (
            devserver() as client,
            client.stream("exp", "lhs") as lhs,
            client.stream("exp", "rhs") as rhs,
        ):
            await client.send(create("for-rhs", "poll://uni@exp/rhs"))
            message = await next_message(rhs)
            task = {"id": "for-rhs", "version": 0}
            assert message == {
                "kind": "execute",
                "head": {"serverUrl": client.dev.url},
                "data": {"task": task},
            }
            await client.send(create("for-lhs", "poll://uni@exp/lhs"))
            assert (await next_message(lhs))["data"]["task"]["id"] == "for-lhs"
            assert rhs.empty()

    asyncio.run(scenario())


def test_anycast_takes_turns() -> None:
    async def scenario() -> None:
        async with (
            devserver() as client,
            client.stream("ops", "a") as a,
            client.stream("ops", "b") as b,
        ):
            for i in range(4):
                await client.send(create(f"op{i}", "poll://any@ops"))
            got_a = [(await next_message(a))["data"]["task"]["id"] for _ in range(2)]
            got_b = [(await next_message(b))["data"]["task"]["id"] for _ in range(2)]
            assert sorted(got_a + got_b) == ["op0", "op1", "op2", "op3"]

    asyncio.run(scenario())


def test_a_reconnecting_pid_replaces_its_old_stream() -> None:
    async def scenario() -> None:
        async with (
            devserver() as client,
            client.stream("exp", "lhs") as old,
            client.stream("exp", "lhs") as new,
        ):
            assert await next_message(old) is None  # the old stream was ended
            await client.send(create("after", "poll://uni@exp/lhs"))
            assert (await next_message(new))["data"]["task"]["id"] == "after"

    asyncio.run(scenario())


def test_a_lapsed_lease_is_delivered_again() -> None:
    async def scenario() -> None:
        async with devserver() as client, client.stream("exp", "lhs") as lhs:
            await client.send(create("job", "poll://uni@exp/lhs"))
            assert (await next_message(lhs))["data"]["task"] == {"id": "job", "version": 0}
            acquire = envelope("task.acquire", id="job", version=0, pid="lhs", ttl=50)
            status, body = await client.send(acquire)
            assert (status, body["data"]["task"]["state"]) == (200, "acquired")
            # No heartbeat: the lease lapses and the tick hands the task out again.
            assert (await next_message(lhs))["data"]["task"] == {"id": "job", "version": 1}

    asyncio.run(scenario())


def test_work_for_a_process_that_connects_just_after_it_was_created_reaches_it() -> None:
    # The SDK's examples start a worker and send it work at once: the work
    # was created before the worker's stream was open. The real server sends
    # it from its next scan; the stand-in had dropped it, and sent it again
    # only at the retry timeout (the model's 30 s here).
    async def scenario() -> None:
        async with devserver() as client:
            await client.send(create("early", "poll://uni@exp/late"))
            async with client.stream("exp", "late") as late:
                assert (await next_message(late))["data"]["task"] == {"id": "early", "version": 0}

    asyncio.run(scenario())


def test_work_for_a_process_that_is_not_connected_is_dropped_after_a_scan() -> None:
    async def scenario() -> float:
        async with devserver() as client:
            created = time.monotonic()
            await client.send(create("unheard", "poll://uni@exp/away"))
            assert client.dev.waiting, "dropped at once"
            async with asyncio.timeout(10):
                while client.dev.waiting:
                    await asyncio.sleep(0.01)
            return time.monotonic() - created

    assert asyncio.run(scenario()) >= TICK_SECONDS


def test_the_branch_index_answers_as_the_models_scan_does() -> None:
    state = IndexedServerState()
    for id, branch in [("a", "a"), ("a:1", "a"), ("a:2", "a:2"), ("a:2.1", "a:2"), ("b", "b")]:
        request = create(id, "poll://any@nobody")["data"]
        request["tags"]["resonate:branch"] = branch
        state.apply(0, {"kind": "promise.create", **request})
    for id in ["a", "a:1", "a:2", "a:2.1", "b", "missing"]:
        assert state.preload(id) == ServerState.preload(state, id)
    assert [p["id"] for p in state.preload("a")] == ["a:1"]
