"""A stand-in for ``resonate dev``, for machines without the server binary.

The protocol logic is none of ours: every request is applied to the SDK's own
model of the server, ``resonate.connections.local.ServerState``, the one its
in-process connection runs on (indexed, see ``model.py``; its answers are
unchanged). This module only puts that model behind the HTTP
protocol the real server speaks, so the SDK's HTTP and SSE clients talk to it
unchanged:

- ``POST /`` takes a request envelope and answers with a response envelope;
- ``GET /poll/{group}/{pid}`` streams the messages addressed to that process
  as Server-Sent Events;
- ``GET /health`` answers 200.

Like ``resonate dev``, it keeps everything in memory: a restart forgets every
promise. Run it with ``resonator-devserver`` (``--help`` for the flags).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections import defaultdict
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web
from resonate.connections import local
from resonate.connections.local import (
    OutgoingMessage,
    unwrap_request_envelope,
    wrap_response_envelope,
)
from resonate.error import ServerError
from resonate.timing import now_ms

from resonator.model import IndexedServerState

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

log = logging.getLogger("resonator.devserver")

TICK_SECONDS = 0.1
MAX_REQUEST_BYTES = 4 * 1024 * 1024

# A connected process: the queue its stream writes out, None to end it.
type Stream = asyncio.Queue[bytes | None]


class DevServer:
    def __init__(self) -> None:
        self.state = IndexedServerState()
        self.streams: dict[str, dict[str, Stream]] = defaultdict(dict)
        self.turns: dict[str, int] = defaultdict(int)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.add_routes(
            [
                web.post("/", self.request),
                web.get("/poll/{group}/{pid}", self.poll),
                web.get("/health", self.health),
            ]
        )
        app.cleanup_ctx.append(self.ticking)
        app.on_shutdown.append(self.close_streams)
        return app

    async def request(self, request: web.Request) -> web.Response:
        try:
            body = msgspec.json.decode(await request.read())
        except msgspec.DecodeError as error:
            return web.json_response({"error": f"invalid JSON: {error}"}, status=400)
        flat = unwrap_request_envelope(body)
        try:
            response = self.state.apply(now_ms(), flat)
        except ServerError as error:
            kind, corr_id = (
                (flat.get("kind"), flat.get("corrId")) if isinstance(flat, dict) else (None, None)
            )
            response = {
                "kind": kind,
                "corrId": corr_id,
                "status": error.code,
                "error": error.message,
            }
        self.deliver()
        envelope = wrap_response_envelope(response)
        status = envelope["head"]["status"]
        return web.Response(
            body=msgspec.json.encode(envelope),
            status=status if status >= 400 else 200,
            content_type="application/json",
        )

    async def poll(self, request: web.Request) -> web.StreamResponse:
        group, pid = request.match_info["group"], request.match_info["pid"]
        stream: Stream = asyncio.Queue()
        # Registered before the headers go out, so nothing addressed to this
        # process after its client sees the stream open can miss it.
        if replaced := self.streams[group].get(pid):
            replaced.put_nowait(None)
        self.streams[group][pid] = stream
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            await response.prepare(request)
            log.debug("stream opened: %s/%s", group, pid)
            while (message := await stream.get()) is not None:
                await response.write(b"data: " + message + b"\n\n")
        except ConnectionError:
            pass
        finally:
            log.debug("stream closed: %s/%s", group, pid)
            if self.streams[group].get(pid) is stream:
                del self.streams[group][pid]
        return response

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def deliver(self) -> None:
        """Send what the last request or tick produced to whoever it names."""
        outgoing, self.state.outgoing = self.state.outgoing, []
        for message in outgoing:
            if stream := self.route(message):
                stream.put_nowait(msgspec.json.encode(message.message))
            else:
                # The server's retry timeout sends a pending task again.
                log.debug("nobody at %s: dropped %s", message.address, message.message)

    def route(self, message: OutgoingMessage) -> Stream | None:
        """``poll://uni@group/pid`` is that process; ``poll://any@group`` any one, in turn."""
        scheme, _, rest = message.address.partition("://")
        cast, _, place = rest.partition("@")
        group, _, pid = place.partition("/")
        members = self.streams.get(group)
        if scheme != "poll" or not members:
            return None
        if cast == "uni":
            return members.get(pid)
        if cast == "any":
            self.turns[group] += 1
            return list(members.values())[self.turns[group] % len(members)]
        return None

    async def ticking(self, app: web.Application) -> AsyncIterator[None]:
        """Let time pass: lapsed leases, task retries and promise timeouts."""

        async def tick() -> None:
            while True:
                await asyncio.sleep(TICK_SECONDS)
                self.state.tick(now_ms())
                self.deliver()

        ticker = asyncio.create_task(tick())
        yield
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker

    async def close_streams(self, app: web.Application) -> None:
        for members in self.streams.values():
            for stream in members.values():
                stream.put_nowait(None)


async def serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    runner = web.AppRunner(DevServer().app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        # The bound address, so that --port 0 tells what it got.
        bound_host, bound_port = runner.addresses[0][:2]
        print(f"resonator-devserver listening on http://{bound_host}:{bound_port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        prog="resonator-devserver",
        description="An in-memory Resonate server: the SDK's server model over HTTP.",
    )
    cli.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    cli.add_argument(
        "--port", type=int, default=8001, help="0 picks a free one (default: %(default)s)"
    )
    cli.add_argument(
        "--tasks-retry-timeout",
        type=int,
        default=local.PENDING_RETRY_TTL,
        metavar="MS",
        help="resend a task nobody took after this long (default: %(default)s)",
    )
    cli.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log streams opened and closed, and dropped messages",
    )
    args = cli.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s"
    )
    # The model reads its retry timeout from this module constant.
    local.PENDING_RETRY_TTL = args.tasks_retry_timeout
    try:
        asyncio.run(serve(args.host, args.port))
    except OSError as error:
        print(
            f"resonator-devserver: cannot listen on {args.host}:{args.port}: {error.strerror}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
