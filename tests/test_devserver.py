"""The stand-in server on its own: raw envelopes over HTTP, messages over SSE."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.test_utils import TestServer
from resonate.connections.local import ServerState

from resonator.servers.devserver import DevServer
from resonator.servers.model import IndexedServerState
from tests.helpers import envelope

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def create(id: str, target: str) -> dict[str, Any]:
    tags = {"resonate:target": target, "resonate:origin": id, "resonate:branch": id}
    tags |= {"resonate:parent": id, "resonate:scope": "global"}
    return envelope("promise.create", id=id, timeoutAt=2**62, param={}, tags=tags)


class Client:
    def __init__(self, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.server, self.session = server, session

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
async def devserver() -> AsyncIterator[Client]:
    server = TestServer(DevServer().app(), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(server, session)
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
            assert body["head"]["status"] == 201
            assert body["data"]["promise"]["state"] == "pending"

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
            assert body["data"]["error"] == "unknown request kind: promise.explode"

            status, body = await client.send(envelope("promise.get"))
            assert status == 400
            assert "id" in body["data"]["error"]

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
            assert message == {"kind": "execute", "data": {"task": {"id": "for-rhs", "version": 0}}}
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


def test_the_branch_index_answers_as_the_models_scan_does() -> None:
    state = IndexedServerState()
    for id, branch in [("a", "a"), ("a:1", "a"), ("a:2", "a:2"), ("a:2.1", "a:2"), ("b", "b")]:
        request = create(id, "poll://any@nobody")["data"]
        request["tags"]["resonate:branch"] = branch
        state.apply(0, {"kind": "promise.create", **request})
    for id in ["a", "a:1", "a:2", "a:2.1", "b", "missing"]:
        assert state.preload(id) == ServerState.preload(state, id)
    assert [p["id"] for p in state.preload("a")] == ["a:1"]
