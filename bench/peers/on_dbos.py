"""The calculator on DBOS: workflows on two queues, checkpointed in Postgres.

``evaluate`` is the evaluator, ``operate`` the operators; each evaluation
of a sub-expression is a workflow enqueued on the ``exp`` queue, each
operator one on the ``ops`` queue, as Resonator sends them to its ``exp``
and ``ops`` groups. DBOS records in its system database (Postgres) each
workflow as it is enqueued, started and finished, and each step's result
(here: each enqueue and each wait for a result), so a workflow that is run
again after a crash replays instead of enqueuing again.

One process runs the workflows (``python -m bench.peers.on_dbos URL``):
DBOS is a library, and this process is its application. Its queues are
polled every ``POLL`` seconds, and so is each result it waits for. The
database is a ``resonator-postgres`` (the embedded Postgres, with the same
settings as Resonator's Postgres mode), in a database of its own; the driver
enqueues each evaluation with a ``DBOSClient`` and polls for its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbos import DBOS, DBOSClient, EnqueueOptions, Queue, WorkflowHandleAsync

from bench.driver import IN_FLIGHT, Driver
from resonator.harness.processes import Topology, python

if TYPE_CHECKING:
    from collections.abc import Iterator

    from resonator.parser import Expr

ROOT = Path(__file__).resolve().parent.parent.parent
POLL = 0.01  # seconds between two looks at a queue, or at a result awaited
DATABASE = "dbos"

queues: dict[str, Queue] = {}  # "exp" and "ops", once registered (``serve``)


@DBOS.workflow()
async def operate(op: str, x: int, y: int) -> int:
    return x + y if op == "+" else x - y if op == "-" else x * y


@DBOS.workflow()
async def evaluate(expr: Any) -> int:
    """The value of ``expr`` (a number, or ``[op, lhs, rhs]`` as JSON has it)."""
    if isinstance(expr, int):
        return expr
    op, lhs, rhs = expr
    # Both operands are enqueued before either is awaited: they run at once.
    x = await queues["exp"].enqueue_async(evaluate, lhs)
    y = await queues["exp"].enqueue_async(evaluate, rhs)
    a = await x.get_result(polling_interval_sec=POLL)
    b = await y.get_result(polling_interval_sec=POLL)
    operated = await queues["ops"].enqueue_async(operate, op, a, b)
    value: int = await operated.get_result(polling_interval_sec=POLL)
    return value


def serve(url: str) -> None:
    """Run the workflows of both queues until SIGTERM."""
    DBOS(config={"name": "resonator-bench", "system_database_url": url, "log_level": "WARNING"})
    DBOS.launch()
    for name in ("exp", "ops"):
        queues[name] = DBOS.register_queue(name, polling_interval_sec=POLL)
    print("dbos worker started", flush=True)
    stop = asyncio.Event()

    async def wait() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    asyncio.run(wait())
    DBOS.destroy()


@contextlib.contextmanager
def running() -> Iterator[tuple[Topology, str]]:
    """A resonator-postgres and the DBOS worker on it: the processes, and the database's URL."""
    with Topology("postgres") as topology:
        topology.server()
        url = f"{topology.url.rpartition('/')[0]}/{DATABASE}"
        worker = python("-m", "bench.peers.on_dbos", url)
        topology.start("dbos", worker, {"PYTHONPATH": str(ROOT)}).wait_for("dbos worker started")
        yield topology, url


class Enqueuing(Driver):
    """Evaluations enqueued on DBOS's ``exp`` queue, each result polled for."""

    def __init__(self, url: str) -> None:
        super().__init__("dbos")
        # A connection for each evaluation in flight, and no cap on how many
        # of them poll for their results at once (by default, two).
        self.client = DBOSClient(
            system_database_url=url,
            system_database_pool_size=IN_FLIGHT,
            system_database_polling_concurrency=0,
        )

    async def __aexit__(self, *_: object) -> None:
        self.client.destroy()

    async def compute(self, id: str, expr: Expr) -> object:
        options: EnqueueOptions = {"queue_name": "exp", "workflow_name": evaluate.__qualname__}
        handle: WorkflowHandleAsync[int] = await self.client.enqueue_async(
            options | {"workflow_id": id}, expr
        )
        return await handle.get_result(polling_interval_sec=POLL)


if __name__ == "__main__":
    serve(sys.argv[1])
