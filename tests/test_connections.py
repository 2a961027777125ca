"""The push channel: it must outlive every stream, whatever ends one.

Each test runs the SDK's real listener or ours against the real stand-in, in
this process. Time is compressed in one place only: aiohttp's default session
timeout, 300 s, is made one second, which is how the SDK's listener met it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp
import aiohttp.client
from resonate.connections import local as model

from resonator.connections.link import Link
from resonator.connections.sse import KeepListening
from tests.test_devserver import create, devserver

if TYPE_CHECKING:
    import pytest

SECOND = aiohttp.ClientTimeout(total=1, sock_connect=1)


def task_ids(messages: list[str]) -> list[str]:
    return [m.split('"id":"')[1].split('"')[0] for m in messages]


def test_our_listener_outlives_the_session_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiohttp.client, "DEFAULT_TIMEOUT", SECOND)

    async def scenario() -> tuple[str, bool]:
        async with devserver() as client:
            url = str(client.server.make_url("")).rstrip("/")
            link = Link(url)
            source = KeepListening(url, "exp", "lhs", link)
            messages: asyncio.Queue[str] = asyncio.Queue()
            source.recv(messages.put_nowait)
            await source.start()
            try:
                await asyncio.wait_for(link.up.wait(), timeout=10)
                # Past the (shortened) default timeout of the SDK's session.
                await asyncio.sleep(2 * SECOND.total)  # type: ignore[operator]
                await client.send(create("later", "poll://uni@exp/lhs"))
                message = await asyncio.wait_for(messages.get(), timeout=10)
                return message, link.lost_reported
            finally:
                await source.stop()

    message, lost = asyncio.run(scenario())
    assert '"id":"later"' in message
    assert not lost, "the stream should have stayed open, not been reopened"


def test_our_listener_says_so_and_listens_again_whatever_ends_a_stream(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The stand-in sends a task that was not taken again after half a second.
    monkeypatch.setattr(model, "PENDING_RETRY_TTL", 500)

    async def scenario() -> list[str]:
        async with devserver() as client:
            url = str(client.server.make_url("")).rstrip("/")
            link = Link(url)
            source = KeepListening(url, "exp", "lhs", link)
            received: asyncio.Queue[str] = asyncio.Queue()
            failures = [RuntimeError("a bug in whatever handles the message")]

            def handle(message: str) -> None:
                if failures:
                    raise failures.pop()
                received.put_nowait(message)

            source.recv(handle)
            await source.start()
            try:
                await asyncio.wait_for(link.up.wait(), timeout=10)
                for id in ("breaks-the-stream", "after"):
                    await client.send(create(id, "poll://uni@exp/lhs"))
                return [await asyncio.wait_for(received.get(), timeout=10) for _ in range(2)]
            finally:
                await source.stop()

    with caplog.at_level(logging.WARNING, logger="resonator"):
        messages = asyncio.run(scenario())
    # Both tasks arrive in the end: the stream was reopened and the server
    # sent again what the broken one had not taken.
    assert sorted(task_ids(messages)) == ["after", "breaks-the-stream"]
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("connected to http://127.0.0.1:")
    assert lines[1].startswith("the stream from the Resonate server at http://127.0.0.1:")
    assert lines[1].endswith(
        " broke (RuntimeError: a bug in whatever handles the message); listening again"
    )
    assert lines[2] == lines[0]
