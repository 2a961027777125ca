"""The same calculator on other durable-execution systems, for the benchmark to compare.

Each peer computes an expression as Resonator does: the evaluator, given a
binary node, invokes itself on each operand (both under way at once), then
invokes the operator on the two values; a number is its own value. Every
invocation is durable in the peer's own way, and ``bench.py --peers`` drives
each peer with the same ``Driver`` as Resonator's modes.

- ``on_restate.py``: Restate (``restate-server`` from npm, in
  ``bench/peers/node_modules``; the services with ``restate-sdk``, served by
  hypercorn);
- ``on_dbos.py``: DBOS (``dbos``, on the embedded Postgres that
  ``resonator-postgres`` runs).

Both need the bench dependency group (``uv run --group bench``); Restate
needs ``npm ci --prefix bench/peers`` too.
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from bench.driver import Driver
    from resonator.harness.processes import Topology

PEERS = ("restate", "dbos")


def missing(peer: str) -> str | None:
    """Why ``peer`` cannot run here, or None if it can."""
    if importlib.util.find_spec("restate") is None or importlib.util.find_spec("dbos") is None:
        return "the peers' packages are not installed: uv run --group bench"
    if peer == "restate":
        from bench.peers import on_restate

        return on_restate.missing()
    from resonator.harness.processes import missing as absent

    return absent("postgres")


@contextlib.contextmanager
def running(peer: str) -> Iterator[tuple[Driver, Topology]]:
    """``peer`` running, and a driver for it (not yet entered): with the processes it runs in."""
    if peer == "restate":
        from bench.peers.on_restate import Restating
        from bench.peers.on_restate import running as restate

        with restate() as (topology, ingress):
            yield Restating(ingress), topology
        return
    from bench.peers.on_dbos import Enqueuing
    from bench.peers.on_dbos import running as dbos

    with dbos() as (topology, url):
        yield Enqueuing(url), topology
