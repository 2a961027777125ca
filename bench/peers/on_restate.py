"""The calculator on Restate: two services, and a server that keeps their journals.

``exp.evaluate`` is the evaluator, ``ops`` has one handler per operator.
Every call between them is an invocation that restate-server records in its
log before it runs, and every result is recorded in the caller's journal, so
a handler that is run again after a crash replays instead of calling again.

The services run in one Python process, an ASGI app served by hypercorn
(``hypercorn bench.peers.on_restate:app``); restate-server (from npm, under
``bench/peers/node_modules``) runs beside it with its data in a scratch
directory, on free loopback ports, and the driver calls ``exp.evaluate``
through its HTTP ingress, with the evaluation's id as idempotency key.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import restate

from bench.driver import Driver
from resonator.harness.processes import Topology, free_port, python

if TYPE_CHECKING:
    from collections.abc import Iterator

    from resonator.parser import Expr

ROOT = Path(__file__).resolve().parent.parent.parent
# The server's own program, from the package npm chose for this platform
# (@restatedev/restate-server-linux-x64, say), not the Node script in front of
# it, which would stand between the benchmark and the process it measures.
PROGRAMS = Path(__file__).parent / "node_modules" / "@restatedev"
SERVER = next(PROGRAMS.glob("restate-server-*/bin/restate-server"), PROGRAMS / "restate-server")

exp = restate.Service("exp")
ops = restate.Service("ops")


@ops.handler()
async def add(ctx: restate.Context, operands: list[int]) -> int:
    return operands[0] + operands[1]


@ops.handler()
async def subtract(ctx: restate.Context, operands: list[int]) -> int:
    return operands[0] - operands[1]


@ops.handler()
async def multiply(ctx: restate.Context, operands: list[int]) -> int:
    return operands[0] * operands[1]


OPERATORS = {"+": add, "-": subtract, "*": multiply}


@exp.handler()
async def evaluate(ctx: restate.Context, expr: Any) -> int:
    """The value of ``expr`` (a number, or ``[op, lhs, rhs]`` as JSON has it)."""
    if isinstance(expr, int):
        return expr
    op, lhs, rhs = expr
    # Both operands are called before either is awaited: they run at once.
    x = ctx.service_call(evaluate, lhs)
    y = ctx.service_call(evaluate, rhs)
    return await ctx.service_call(OPERATORS[op], [await x, await y])


app = restate.app(services=[exp, ops])


def missing() -> str | None:
    """Why Restate cannot run here, or None if it can."""
    if not SERVER.exists():
        return "no restate-server: run `npm ci --prefix bench/peers`"
    return None


@contextlib.contextmanager
def running() -> Iterator[tuple[Topology, str]]:
    """restate-server and the services, registered with it: the processes, and the ingress."""
    ingress, admin, fabric, services = (free_port() for _ in range(4))
    with Topology() as topology:
        environment = {
            "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{ingress}",
            "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{admin}",
            "RESTATE_BIND_ADDRESS": f"127.0.0.1:{fabric}",
            "RESTATE_LOG_FORMAT": "compact",  # one line an event, to wait for
            "RESTATE_LOG_DISABLE_ANSI_CODES": "true",
            "RESTATE_DISABLE_TELEMETRY": "true",
            "RUST_LOG": "warn,restate=info",
        }
        command = [str(SERVER), "--no-logo", "--listen-mode", "tcp", "--node-name", "bench"]
        command += ["--base-dir", str(topology.files() / "restate")]
        server = topology.start("restate", command, environment)
        server.wait_for("Admin API starting on")
        where = f"127.0.0.1:{services}"
        # --workers 0: the app in hypercorn's own process, which is the one the
        # benchmark starts and kills (a worker it spawned would outlive a kill).
        hypercorn = python("-m", "hypercorn", "--workers", "0", "--bind", where)
        hypercorn.append("bench.peers.on_restate:app")
        topology.start("services", hypercorn, {"PYTHONPATH": str(ROOT)}).wait_for("Running on")
        register(f"http://127.0.0.1:{admin}", f"http://{where}")
        yield topology, f"http://127.0.0.1:{ingress}"


def register(admin: str, services: str) -> None:
    """Tell restate-server where the services are; it asks them what they have."""
    body = json.dumps({"uri": services}).encode()
    request = urllib.request.Request(f"{admin}/deployments", body, method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 201), response.status


class Restating(Driver):
    """Evaluations through Restate's ingress: one call of ``exp.evaluate`` each."""

    def __init__(self, ingress: str) -> None:
        super().__init__("restate")
        self.ingress = ingress
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Restating:
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.http:
            await self.http.close()

    async def compute(self, id: str, expr: Expr) -> object:
        assert self.http is not None
        headers = {"idempotency-key": id}
        async with self.http.post(
            f"{self.ingress}/exp/evaluate", json=expr, headers=headers
        ) as response:
            response.raise_for_status()
            return await response.json()
