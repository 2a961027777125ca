"""resonator-web: the page, and the command line that serves it.

    uv run resonator-web                  # a topology of its own; open the address it prints
    uv run resonator-web --url URL        # one already running: no process buttons

With a topology of its own (as ``resonator-demo`` starts it: a server,
``exp/lhs``, ``exp/rhs`` and two ops workers, on a free loopback port) it
prints the page's address as its first line. Its own process is the page's
prompt: it starts each computation typed on the page, as ``resonator`` does.

What it answers:

- ``GET /`` and ``/static/...``: the page, from ``static/``;
- ``GET /events``: Server-Sent Events, one per part of the page's state that
  changes (the computations, the processes, the story of a scenario...);
- ``GET /tree?id=ID``: Server-Sent Events, the tree of ``ID`` each time it
  changes; the server is read for it only while such a stream is open;
- ``POST /compute``, ``/kill``, ``/start``, ``/pool``, ``/play``: JSON in, JSON out.
  What the person should read (a syntax error, a process that is not ours)
  is ``{"error": ...}`` with a 200: a request the page would never send (no
  JSON, another site's) gets a 4xx.

Safe on a shared machine: it listens on loopback unless given ``--host``
and a token. Every request must name, in ``Host``, the address the page is
served at (a page of another site whose name was pointed at this address,
DNS rebinding, is turned away); every request that changes something must
come from the page itself (``Origin``); nothing may frame the page; and the
page loads nothing from anywhere else.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import signal
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from aiohttp import web
from resonate.resonate import DEFAULT_TTL

from resonator.client.calculator import CONNECT_WAIT, Calculator, Failed, Unreachable, new_id
from resonator.client.scenarios import LEASES, SCENARIOS
from resonator.client.settings import ID, SCHEMES, seconds, setup_logging
from resonator.harness.processes import missing
from resonator.resonator import EXP, connect
from resonator.servers import CommandLine, tcp_port
from resonator.servers.devserver import TurnedAway, loopback
from resonator.trace import Tracer
from resonator.web.live import Board, Listing, Trees
from resonator.web.stage import Busy, PageStage

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

PORT = 8002  # beside the Resonate server's 8001
STATIC = Path(__file__).parent / "static"
MAX_BODY = 64 * 1024  # bytes; an expression is at most 4000 characters
KEEPALIVE = 15.0  # seconds between comments on a quiet stream, so a dead page is noticed
COOKIE = "resonator-web"  # where the browser keeps the token, once given in the address
HEADERS = {
    # Only the page's own files and requests, and no framing (no other site
    # can lay the page under a click of its own).
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
IDS = "an id is 1 to 100 printable ASCII characters, without ':' or spaces"

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Page:
    """The aiohttp application: the page, its streams, and what it may ask for."""

    def __init__(
        self,
        calculator: Calculator,
        stage: PageStage | None,
        hosts: frozenset[str],
        token: str | None,
    ) -> None:
        self.calculator = calculator
        self.stage = stage  # None: attached to a topology of somebody else's
        self.hosts = hosts  # the Host headers it answers
        self.token = token
        self.board = Board()
        self.listing = Listing(self.board)
        self.trees = Trees(calculator.reader, self.listing.seen)
        self.streams: set[asyncio.Task[Any]] = set()  # open, to end when the page stops
        self.waiting: set[asyncio.Task[None]] = set()  # computations it waits for

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self.guard])
        app.add_routes(
            [
                web.get("/", self.index),
                web.get("/favicon.ico", self.favicon),
                web.static("/static", STATIC),
                web.get("/events", self.events),
                web.get("/tree", self.tree),
                web.post("/compute", self.compute),
                web.post("/kill", self.kill),
                web.post("/start", self.start),
                web.post("/play", self.play),
                web.post("/pool", self.pool),
            ]
        )
        app.on_response_prepare.append(self.secure)
        app.on_shutdown.append(self.close)
        return app

    def open(self, url: str) -> None:
        """What the page shows before anything happens, and the processes from now on."""
        own = self.stage is not None
        plays = [{"name": n, "what": play.__doc__} for n, play in SCENARIOS.items()]
        self.board.put("setup", {"server": url, "own": own, "scenarios": plays if own else []})
        self.listing.publish()
        if self.stage:
            self.stage.open(self.board, self.trees, self.listing)

    # ── Who may ask ──

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host.lower() not in self.hosts:
            return rejected(421, f"this page answers for {' or '.join(sorted(self.hosts))} only")
        if self.token is not None:
            given = request.cookies.get(COOKIE) or request.query.get("token", "")
            # In constant time: how long a wrong guess took says nothing of the token.
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return rejected(401, "open the address resonator-web printed: it has the token")
            if "token" in request.query:  # kept by the browser, and out of the address bar
                found = web.HTTPFound(request.path)
                found.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
                return found
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin")
            if origin != f"http://{request.host}":
                return rejected(403, f"refused: a request from {origin or 'no page'}, not this one")
        try:
            return await handler(request)
        except TurnedAway as turned:
            return rejected(*turned.args)

    async def secure(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(HEADERS)

    # ── The page ──

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def favicon(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "favicon.svg")

    async def events(self, request: web.Request) -> web.StreamResponse:
        return await self.stream(request, self.board)

    async def tree(self, request: web.Request) -> web.StreamResponse:
        id = request.query.get("id", "")
        if not ID.fullmatch(id):
            raise TurnedAway(400, IDS)
        async with self.trees.watch(id) as tree:
            return await self.stream(request, tree.board)

    async def stream(self, request: web.Request, board: Board) -> web.StreamResponse:
        """Every part of ``board``, then each one that changes, until the page goes."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        self.streams.add(task)
        try:
            await response.write(b"retry: 1000\n\n")  # reconnect a second after a break
            seen = 0
            while True:
                try:
                    seen, parts = await asyncio.wait_for(board.since(seen), KEEPALIVE)
                except TimeoutError:
                    await response.write(b": still here\n\n")
                    continue
                for name, value in parts.items():
                    await response.write(f"event: {name}\ndata: {json.dumps(value)}\n\n".encode())
        except ConnectionError:
            return response  # the page went
        finally:
            self.streams.discard(task)

    async def close(self, app: web.Application) -> None:
        for task in self.streams:
            task.cancel()
        for waiting in self.waiting:
            waiting.cancel()

    # ── What the page asks for ──

    async def compute(self, request: web.Request) -> web.Response:
        """Compute, as ``resonator [--id ID] EXPR`` does; or follow ``ID``, as ``--watch`` does."""
        given = await body(request)
        text, id = given.get("text", ""), given.get("id", "")
        if not isinstance(text, str) or not isinstance(id, str):
            raise TurnedAway(400, "text and id must be strings")
        text, id = text.strip(), id.strip()
        if id and not ID.fullmatch(id):
            return not_done(IDS)
        if not text and not id:
            return not_done("type an expression, or the id of a computation to follow")
        try:
            await self.calculator.ready(CONNECT_WAIT)
            if not text:
                await self.calculator.tree(id)  # to learn that there is one
                self.listing.add(id, "", watched=True)
            else:
                named, id = bool(id), id or new_id()
                await self.calculator.begin(text, id, id_given=named)
                self.listing.add(id, text, watched=False)
                waiting = asyncio.create_task(self.wait(text, id))
                self.waiting.add(waiting)
                waiting.add_done_callback(self.waiting.discard)
        except (Failed, Unreachable) as error:
            return not_done(str(error))
        return web.json_response({"id": id})

    async def wait(self, text: str, id: str) -> None:
        """The value of computation ``id``, begun already, or why it has none, when it comes."""
        try:
            # Attached to what begin() started: a given id was claimed there, once.
            value = await self.calculator.compute(text, id)
        except Failed as failure:
            self.listing.end(id, "failed", message=str(failure))
        else:
            self.listing.end(id, "resolved", str(value))

    async def kill(self, request: web.Request) -> web.Response:
        pid = (await body(request)).get("pid")
        if not isinstance(pid, int):
            raise TurnedAway(400, "pid must be a number")
        return await self.act(lambda stage: stage.kill_pid(pid))

    async def start(self, request: web.Request) -> web.Response:
        name = (await body(request)).get("name")
        if not isinstance(name, str):
            raise TurnedAway(400, "name must be a string")
        return await self.act(lambda stage: stage.restart(name))

    async def pool(self, request: web.Request) -> web.Response:
        """One ops worker more (``{"act": "add"}``), or the last one added less ("remove")."""
        act = (await body(request)).get("act")
        if act not in ("add", "remove"):
            raise TurnedAway(400, 'act must be "add" or "remove"')
        return await self.act(lambda stage: stage.grow() if act == "add" else stage.shrink())

    async def play(self, request: web.Request) -> web.Response:
        name = (await body(request)).get("name")
        if not isinstance(name, str):
            raise TurnedAway(400, "name must be a string")
        stage = self.own_stage()
        try:
            stage.play(name)
        except Busy as busy:
            return not_done(str(busy))
        return web.json_response({})

    def own_stage(self) -> PageStage:
        if self.stage is None:
            raise TurnedAway(409, "attached to a topology of somebody else's: no processes here")
        return self.stage

    async def act(self, act: Callable[[PageStage], None]) -> web.Response:
        """Do ``act`` on a thread (it waits for processes to start or end); what came of it."""
        stage = self.own_stage()
        try:
            await asyncio.to_thread(act, stage)
        except Busy as busy:
            return not_done(str(busy))
        except (TimeoutError, AssertionError) as error:  # it started, and never said so
            return not_done(str(error).splitlines()[0])
        return web.json_response({})


async def body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400."""
    try:
        given = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise TurnedAway(400, "the body must be JSON") from None
    if not isinstance(given, dict):
        raise TurnedAway(400, "the body must be a JSON object")
    return given


def not_done(message: str) -> web.Response:
    """An answer for the person at the page: why nothing was done."""
    return web.json_response({"error": message})


def rejected(status: int, why: str) -> web.Response:
    return web.json_response({"error": why}, status=status)


# ── The command line ────────────────────────────────────────────────────────


def authorities(host: str, port: int) -> frozenset[str]:
    """The ``Host`` headers of requests for the page: its address, under the names it has."""
    names = {host.lower()} | ({"localhost", "127.0.0.1"} if loopback(host) else set())
    return frozenset(f"[{name}]:{port}" if ":" in name else f"{name}:{port}" for name in names)


async def serve(
    listener: socket.socket, host: str, url: str, stage: PageStage | None, token: str | None
) -> int:
    """Serve the page at ``host`` until SIGINT or SIGTERM; the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Its own lease, and the root's first step, as its processes have them.
    lease = seconds("RESONATOR_TTL") or (float(LEASES["RESONATOR_TTL"]) if stage else None)
    ttl = timedelta(seconds=lease) if lease else DEFAULT_TTL
    tracer = Tracer("web", exp_delay=seconds("RESONATOR_EXP_DELAY") or 0.0)
    resonate, connection = connect(url, "prompt", new_id()[:8], ttl, tracer)
    # As the prompt does: a root's later runs go to any exp worker.
    calculator = Calculator(resonate.options(target=EXP), connection)
    address, port = listener.getsockname()[:2]
    # Asked for by the name it was given, or by the address that name has.
    page = Page(calculator, stage, authorities(host, port) | authorities(address, port), token)
    site = web.AppRunner(page.app(), handler_cancellation=True, access_log=None)
    await site.setup()
    await web.SockSite(site, listener).start()
    shown = f"[{host}]" if ":" in host else host
    print(f"http://{shown}:{port}/" + (f"?token={token}" if token else ""), flush=True)
    print(f"the Resonate server: {url}", flush=True)
    page.open(url)
    async with calculator:
        stopped = asyncio.ensure_future(stop.wait())
        # A server that is not there, or cannot serve us, is said at once, and ends the page.
        ready = asyncio.ensure_future(calculator.ready(None))
        try:
            await asyncio.wait([stopped, ready], return_when=asyncio.FIRST_COMPLETED)
            if ready.done() and isinstance(why := ready.exception(), Unreachable):
                print(f"resonator-web: {why}", file=sys.stderr)
                return 1
            await stopped
            return 0
        finally:
            stopped.cancel()
            ready.cancel()
            await site.cleanup()
            if stage:  # now: an act waiting for one of them ends with it
                stage.topology.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> int:
    cli = CommandLine(
        prog="resonator-web",
        description="The live promise tree of each computation, the processes, and a kill "
        "button for each, in a browser.",
        epilog="The processes it starts take its environment: RESONATOR_TTL (default here 2), "
        "RESONATOR_OP_DELAY (default here 1) and RESONATOR_EXP_DELAY slow them down.",
    )
    where = cli.add_mutually_exclusive_group()
    where.add_argument(
        "--server",
        choices=("stand-in", "resonate", "postgres"),
        default="stand-in",
        help="the server of its own topology: the stand-in, resonate on PATH, or Resonate on "
        "Postgres (RESONATE_PG_SQL) (default: %(default)s)",
    )
    where.add_argument(
        "--url",
        help="attach to the Resonate server at URL instead, and start no process "
        "(RESONATE_TOKEN, if it asks for a token)",
    )
    cli.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to serve the page at, and to open it at; any but loopback needs "
        "a token (default: %(default)s)",
    )
    cli.add_argument(
        "--port", type=tcp_port, default=PORT, help="0 picks a free one (default: %(default)s)"
    )
    cli.add_argument(
        "--token",
        default=os.environ.get("RESONATOR_WEB_TOKEN") or None,
        help="a secret the page's address carries, and every request after it (default: "
        "RESONATOR_WEB_TOKEN, which keeps it out of the process list; unset: none)",
    )
    args = cli.parse_args(argv)
    if args.url and not args.url.startswith(SCHEMES):
        cli.error(f"--url must start with {', '.join(SCHEMES)}, not {args.url!r}")
    if args.url is None and (why := missing(args.server)):
        cli.error(why)
    if not args.token and not loopback(args.host):
        cli.error(
            f"will not serve on {args.host} without a token: anyone who can reach it could "
            "kill its processes (set RESONATOR_WEB_TOKEN, or --token)"
        )
    for name in ("RESONATOR_TTL", "RESONATOR_EXP_DELAY"):
        seconds(name)  # says now, and stops, if it is not a number of seconds
    setup_logging(0, worker=False)
    # SIGTERM stops it as Ctrl-C does while the topology starts; then the loop takes over.
    signal.signal(signal.SIGTERM, interrupted)
    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        listener = socket.create_server((args.host, args.port), family=family)
    except OSError as error:
        print(f"resonator-web: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    stage = None if args.url else PageStage(args.server)
    try:
        if stage:
            stage.start()
        url = args.url or (stage.topology.url if stage else "")
        return asyncio.run(serve(listener, args.host, url, stage, args.token))
    except KeyboardInterrupt:
        return 0
    except (TimeoutError, AssertionError) as error:  # a process of its own did not start
        print(f"resonator-web: {error}", file=sys.stderr)
        return 1
    finally:
        listener.close()
        if stage:
            stage.topology.__exit__(None, None, None)


def interrupted(*_: object) -> NoReturn:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
