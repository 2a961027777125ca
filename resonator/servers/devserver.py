"""A stand-in for ``resonate dev``, for machines without the server binary.

The protocol logic is hardly ours: every request is applied to the SDK's own
model of the server, ``resonate.connections.local.ServerState``, the one its
in-process connection runs on (indexed, with a bounded memory, and answering
``task.get`` as well: see ``model.py``). This module puts that model behind
the HTTP protocol the real server speaks, in the real server's words
(``wire.py``), so that the SDKs' HTTP and SSE clients talk to it as to the
real server, and keeps it standing under hostile input:

- ``POST /`` takes a request envelope and answers with a response envelope;
- ``GET /poll/{group}/{pid}`` streams the messages addressed to that process
  as Server-Sent Events;
- ``GET /health`` answers 200, with the promises held and requests answered.

With a token (``--token``, or ``RESONATE_TOKEN`` as the SDK reads it), every
request and stream must carry ``Authorization: Bearer <token>``; anything else
is answered 401 and changes nothing, and ``/health`` says only that it is up.
Without a token it listens on loopback only.

A message for a process that is connected goes out at once; one for any
process of a group goes to the least busy (``route``). One for a
process that is not waits for it for a scan or two (0.1 to 0.2 s), and is
then dropped, until the retry timeout sends the task again: the real server
sends every message from a scan, every 0.1 s, so a process that connects
just after the work for it was created still gets it there, and gets it here.

Like ``resonate dev``, it keeps everything in memory: a restart forgets every
promise. Run it with ``resonator-devserver`` (``--help`` for the flags).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import ipaddress
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from resonate.connections import local
from resonate.connections.local import unwrap_request_envelope
from resonate.error import ServerError
from resonate.timing import now_ms

from resonator.servers import KEEP, CommandLine, OneLine, duration, positive, tcp_port, wire
from resonator.servers.model import IndexedServerState

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger("resonator.servers.devserver")

TICK_SECONDS = 0.1  # how often time passes, and messages nobody took are tried again
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# A connection that has not sent a whole request within this many seconds
# (its first, or its next one) is closed. Longer than the 15 s for which
# aiohttp's clients keep an idle connection, so they never reuse one that
# the server is closing.
REQUEST_TIMEOUT = 20.0
MAX_CONNECTIONS = 1000  # or fewer, to stay under the limit on open files

# A connected process: the queue its stream writes out, None to end it.
type Stream = asyncio.Queue[bytes | None]


class TurnedAway(Exception):
    """A request turned away: (HTTP status, what was wrong), said in one log line."""


class ClosedAtOnce(asyncio.Protocol):
    """A connection over the limit: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class DevServer:
    def __init__(
        self,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        keep: int | None = None,
        token: str | None = None,
    ) -> None:
        self.request_timeout = request_timeout
        self.token = token  # None: anyone may ask
        self.max_connections = max_connections
        self.said: dict[str, float] = {}  # line -> when it may be said again
        self.requests = 0  # answered on POST /, for /health
        self.state = IndexedServerState(keep)
        self.streams: dict[str, dict[str, Stream]] = defaultdict(dict)
        self.turns: dict[str, int] = defaultdict(int)
        self.url = ""  # where it listens, which every execute message names
        # Messages whose process was not connected: (when to drop, address,
        # message, the task an execute offers).
        self.waiting: list[tuple[float, str, bytes, str | None]] = []
        self.load = Load()  # what each process has in hand, for anycast

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[self.authorize])
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

    @web.middleware
    async def authorize(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """A request with the token (or any, if there is none) goes on; any other gets a 401."""
        if self.token is None or request.path == "/health" or self.bears_token(request):
            return await handler(request)
        why = "a wrong token" if "Authorization" in request.headers else "no token"
        # Said once a minute per address, however often it asks.
        self.say_now_and_then(f"refused requests from {request.remote}: {why} (401)")
        refused = web.json_response(
            {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}
        )
        refused.force_close()  # and read nothing more of what it sends
        return refused

    def bears_token(self, request: web.Request) -> bool:
        assert self.token is not None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # In constant time: how long a wrong guess took says nothing about the token.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.encode(), self.token.encode()
        )

    async def request(self, request: web.Request) -> web.Response:
        self.requests += 1
        try:
            envelope = self.answer(unwrap_request_envelope(await self.body(request)))
            encoded = msgspec.json.encode(envelope)
        except TurnedAway as turned:
            status, what = turned.args
            log.warning("refused a request from %s: %s (%d)", request.remote, what, status)
            refused = web.json_response({"error": what}, status=status)
            refused.force_close()  # and read nothing more of what it sends
            return refused
        except (TypeError, OverflowError, msgspec.EncodeError) as error:
            log.warning("an answer could not be written as JSON: %s", error)
            return web.json_response({"error": "the answer cannot be JSON"}, status=500)
        finally:
            self.deliver()
        return web.Response(
            body=encoded, status=envelope["head"]["status"], content_type="application/json"
        )

    async def body(self, request: web.Request) -> Any:
        """The request's JSON body, or a ``TurnedAway``: at once for one too long to take."""
        if (request.content_length or 0) > MAX_REQUEST_BYTES:
            raise TurnedAway(413, f"a body of {request.content_length} bytes")
        try:
            return msgspec.json.decode(await asyncio.wait_for(request.read(), self.request_timeout))
        except TimeoutError:
            raise TurnedAway(408, "a body that never arrived") from None
        except web.HTTPRequestEntityTooLarge:
            raise TurnedAway(413, "a body over the limit") from None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as error:
            raise TurnedAway(400, f"invalid JSON: {error}") from None

    def answer(self, flat: Any) -> dict[str, Any]:
        """The model's response envelope to a flat request, in the real server's words."""
        try:
            response = self.state.apply(now_ms(), wire.request(self.state, flat))
            self.load.count(flat, response["status"])
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
        except Exception as error:  # the model choked on something: that request fails
            log.debug("request failed: %r", flat, exc_info=True)
            raise TurnedAway(500, f"{type(error).__name__}: {error}") from None
        return wire.answer(self.state, flat, response)

    async def poll(self, request: web.Request) -> web.StreamResponse:
        group, pid = request.match_info["group"], request.match_info["pid"]
        stream: Stream = asyncio.Queue()
        # Registered before the headers go out, so nothing addressed to this
        # process after its client sees the stream open can miss it.
        if replaced := self.streams[group].get(pid):
            replaced.put_nowait(None)
        self.streams[group][pid] = stream
        self.send_waiting()
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
        """200; and, to a caller with the token, what the server holds and has answered."""
        if self.token is not None and not self.bears_token(request):
            return web.json_response({"status": "ok"})
        held = {"promises": len(self.state.promises), "tasks": len(self.state.tasks)}
        return web.json_response({"status": "ok", "requests": self.requests, **held})

    def connection(self, handlers: web.Server) -> asyncio.BaseProtocol:
        """A new connection's protocol: aiohttp's, or one that closes it when there are too many."""
        if len(handlers.connections) < self.max_connections:
            return handlers()
        self.say_now_and_then(
            f"{self.max_connections} connections are open, the most allowed: "
            "new ones are closed at once"
        )
        return ClosedAtOnce()

    def loop_trouble(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """What asyncio would log with a traceback, as one line."""
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
            self.say_now_and_then("out of file descriptors: new connections wait until some close")
        else:
            log.warning("%s: %r", context.get("message", "trouble"), error)

    def say_now_and_then(self, line: str) -> None:
        """Log a condition that may recur for every connection once a minute at most."""
        now = time.monotonic()
        if now >= self.said.get(line, 0.0):
            log.warning("%s", line)
            self.said[line] = now + 60

    def deliver(self) -> None:
        """Send what the last request or tick produced to whoever it names."""
        outgoing, self.state.outgoing = self.state.outgoing, []
        until = time.monotonic() + TICK_SECONDS
        for message in outgoing:
            said = wire.message(self.state, message.message, self.url)
            task = said["data"]["task"]["id"] if said["kind"] == "execute" else None
            self.waiting.append((until, message.address, msgspec.json.encode(said), task))
        self.send_waiting()

    def send_waiting(self) -> None:
        """Send each message waiting whose process is connected; drop those that waited long enough.

        A dropped ``execute`` is sent again when the retry timeout sends its task again.
        """
        now, waiting, self.waiting = time.monotonic(), self.waiting, []
        for until, address, message, task in waiting:
            if pid := self.route(address):
                group = address.partition("@")[2].partition("/")[0]
                self.streams[group][pid].put_nowait(message)
                if task is not None:
                    self.load.offered(task, pid)
            elif now < until:
                self.waiting.append((until, address, message, task))
            else:
                log.debug("nobody at %s: dropped %s", address, message.decode())

    def route(self, address: str) -> str | None:
        """Whom to send to: for ``poll://uni@group/pid`` that pid, for ``poll://any@group`` one.

        Of a group, the least busy member: it holds the fewest tasks, and has
        the fewest offered to it and not yet taken; of those equally busy, each
        in turn. (The real server picks one at random, busy or not; a message
        that waits at a busy member while another is idle is the pool's loss:
        docs/distributed.md.)
        """
        scheme, _, rest = address.partition("://")
        cast, _, place = rest.partition("@")
        group, _, pid = place.partition("/")
        members = self.streams.get(group)
        if scheme != "poll" or not members:
            return None
        if cast == "uni":
            return pid if pid in members else None
        if cast == "any":
            self.turns[group] += 1
            pids = list(members)
            start = self.turns[group] % len(pids)
            return min(pids[start:] + pids[:start], key=self.load.of)
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


class Load:
    """The tasks each process holds, and those offered to it and not yet taken by anyone."""

    def __init__(self) -> None:
        self.holders: dict[str, str] = {}  # task -> the pid that acquired it
        self.offers: dict[str, str] = {}  # task -> the pid last offered it
        self.held: Counter[str] = Counter()
        self.open: Counter[str] = Counter()  # offers not yet taken, by pid

    def of(self, pid: str) -> int:
        return self.held[pid] + self.open[pid]

    def offered(self, task: str, pid: str) -> None:
        self.withdraw(task)
        self.offers[task] = pid
        self.open[pid] += 1

    def withdraw(self, task: str) -> None:
        if (pid := self.offers.pop(task, None)) is not None:
            self.open[pid] -= 1

    def count(self, flat: Any, status: int) -> None:
        """What an answered request changed: a task taken, or let go."""
        if not isinstance(flat, dict) or status not in (200, 201):
            return  # refused (or a redirect): nothing changed hands
        kind, task, pid = flat.get("kind"), flat.get("id"), flat.get("pid")
        if not isinstance(task, str):
            return
        if kind == "task.acquire" and isinstance(pid, str):
            self.withdraw(task)
            self.let_go(task)
            self.holders[task] = pid
            self.held[pid] += 1
        elif kind in ("task.fulfill", "task.suspend", "task.release"):
            self.let_go(task)

    def let_go(self, task: str) -> None:
        if (pid := self.holders.pop(task, None)) is not None:
            self.held[pid] -= 1


async def listen(host: str, port: int, server: DevServer) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(server.loop_trouble)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(
        server.app(),
        handler_cancellation=True,
        access_log=None,
        keepalive_timeout=server.request_timeout,
        # After refusing a request, read its unwanted body for at most this long.
        lingering_time=2,
    )
    await runner.setup()
    handlers = runner.server
    assert handlers is not None
    listener = await loop.create_server(lambda: server.connection(handlers), host, port)
    try:
        # The bound address, so that --port 0 tells what it got.
        bound_host, bound_port = listener.sockets[0].getsockname()[:2]
        server.url = f"http://{bound_host}:{bound_port}"
        print(f"resonator-devserver listening on {server.url}", flush=True)
        await stop.wait()
    finally:
        listener.close()
        await runner.cleanup()


def open_files_allowed() -> int:
    """Raise this process's limit on open files as far as it may go; the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def loopback(host: str) -> bool:
    """True if every address ``host`` names is a loopback one (so no other machine can ask)."""
    try:
        addresses = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return all(ipaddress.ip_address(address[4][0]).is_loopback for address in addresses)


def main(argv: list[str] | None = None) -> int:
    cli = CommandLine(
        prog="resonator-devserver",
        description="An in-memory Resonate server: the SDK's server model over HTTP.",
    )
    cli.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; any but loopback needs a token (default: %(default)s)",
    )
    cli.add_argument(
        "--token",
        default=os.environ.get("RESONATE_TOKEN") or None,
        help="the bearer token every request and stream must carry (default: RESONATE_TOKEN, "
        "which keeps it out of the process list; unset: none)",
    )
    cli.add_argument(
        "--port", type=tcp_port, default=8001, help="0 picks a free one (default: %(default)s)"
    )
    cli.add_argument(
        "--tasks-retry-timeout",
        type=positive,
        default=local.PENDING_RETRY_TTL,
        metavar="MS",
        help="resend a task nobody took after this long (default: %(default)s)",
    )
    cli.add_argument(
        "--request-timeout",
        type=duration,
        default=REQUEST_TIMEOUT,
        metavar="SECONDS",
        help="close a connection that sends no whole request for this long (default: %(default)s)",
    )
    cli.add_argument(
        "--max-connections",
        type=positive,
        default=MAX_CONNECTIONS,
        metavar="N",
        help="close new connections beyond this many; lowered to fit the limit on open "
        "files (default: %(default)s)",
    )
    cli.add_argument(
        "--keep",
        type=positive,
        default=KEEP,
        metavar="N",
        help="settled computations to keep in memory; older ones are forgotten "
        "(default: %(default)s)",
    )
    cli.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log streams opened and closed, and dropped messages",
    )
    args = cli.parse_args(argv)
    if not args.token and not loopback(args.host):
        print(
            f"resonator-devserver: will not listen on {args.host} without a token: anyone who "
            "can reach it could run and settle anything (set RESONATE_TOKEN, or --token)",
            file=sys.stderr,
        )
        return 2
    handler = logging.StreamHandler()
    handler.setFormatter(OneLine())
    logging.basicConfig(
        handlers=[handler], level=logging.DEBUG if args.verbose else logging.WARNING
    )
    # aiohttp logs each malformed request with a traceback: one line with -v,
    # nothing otherwise (the client has its 400).
    logging.getLogger("aiohttp.server").setLevel(
        logging.DEBUG if args.verbose else logging.CRITICAL
    )
    # Not "Using selector: EpollSelector" at every start.
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    # The model reads its retry timeout from this module constant.
    local.PENDING_RETRY_TTL = args.tasks_retry_timeout
    # Room for every connection allowed, and for the files and pipes of the process.
    connections = min(args.max_connections, open_files_allowed() - 64)
    try:
        server = DevServer(args.request_timeout, connections, args.keep, args.token or None)
        asyncio.run(listen(args.host, args.port, server))
    except OSError as error:
        print(
            f"resonator-devserver: cannot listen on {args.host}:{args.port}: {error.strerror}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
