"""Big trees: every expression within the parser's limits computes right, on every server.

A chain ``1 + 1 + ... + 1`` of 999 operators is a tree 999 levels deep:
deeper than Python recurses, and every promise id in it grows two characters
a level. A balanced tree of depth 9 has 511 operators, 1,534 promises. Both
are computed at once, on each server, and checked against Python's
arithmetic; what is nested deeper than the servers can carry is refused
before anything starts, in one line. (A balanced tree of depth 10, the
widest that fits in 4,000 characters, is parsed in ``test_parser.py``; it
would double the time these take.)

The suite's big tier: minutes on the servers (``-m "not big"`` leaves it out).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import ExitStack

import pytest

from resonator.harness.processes import TRACE, Topology
from resonator.parser import MAX_NESTING, parse
from resonator.terminal.drawing import PIPED
from tests.helpers import CHAIN, VALUE, available, balanced, embedded, oracle

pytestmark = pytest.mark.big

DEEPER = "+".join(["1"] * (MAX_NESTING + 2))  # one level past the limit
BIG_WAIT = 900.0  # seconds: a loaded machine takes minutes over the chain


WIDE = balanced(9)
BOTH = {"chain": CHAIN, "wide": WIDE}  # computed at once, on each server
SERVERS = ("stand-in", "postgres", "resonate")


def test_the_big_trees_fit_and_are_as_big_as_said() -> None:
    assert len(WIDE) <= 4000 and len(CHAIN) <= 4000
    assert str(parse(WIDE)).count("(") == 511  # a tuple per operator
    assert oracle(CHAIN) == 1000


def test_the_big_trees_embedded() -> None:
    async def values() -> list[int]:
        async with embedded() as (resonate, _):
            handles = [
                resonate.run(id, "=", parse(text)) for id, text in (("c", CHAIN), ("w", WIDE))
            ]
            return [await handle.result() for handle in handles]

    assert asyncio.run(values()) == [oracle(CHAIN), oracle(WIDE)]


# The three servers, each with its own processes, all at once: one after another
# they took four minutes, and the real server spends most of its time waiting for
# its scans, while the other two keep the cores busy.
@pytest.mark.parametrize("servers", [SERVERS], ids=["-".join(SERVERS)])
def test_the_big_trees_on_every_server_at_once(servers: tuple[str, ...]) -> None:
    with ExitStack() as stack:
        topologies = {
            server: stack.enter_context(Topology(available(server))).standard()
            for server in servers
        }
        prompts = {
            server: [topology.prompt("--id", id, text, name=id) for id, text in BOTH.items()]
            for server, topology in topologies.items()
        }
        for server, topology in topologies.items():
            for prompt, text in zip(prompts[server], BOTH.values(), strict=True):
                value = prompt.wait_for(VALUE, timeout=BIG_WAIT).group(0)
                assert (server, value) == (server, str(oracle(text)))
                assert (server, prompt.wait_closed()) == (server, 0)
            # Every operator ran, and once.
            ran = Counter(t["id"].partition(":")[0] for t in topology.traces("ops"))
            assert (server, ran) == (server, {"chain": 999, "wide": 511})
            assert len({t["id"] for t in topology.traces("ops")}) == 999 + 511, server
            # No process said anything of an error, nor left a traceback.
            for process in topology.history:
                said = [line for line in process.lines if not TRACE.match(line)]
                errors = [line for line in said if "rror" in line or "Traceback" in line]
                assert not errors, (server, said)
            # Read back, each is drawn folded: a line that says so, and no more than the
            # rows a pipe gets (the chain unfolded was 33 MB).
            for id, promises in (("chain", "2,998"), ("wide", "1,534")):
                tree = topology.calculate("--tree", "--id", id)
                assert tree.returncode == 0, (server, tree.stderr)
                heading, *rows = tree.stdout.splitlines()
                assert heading.startswith(f"{promises} promises, {promises} settled: folded into ")
                assert len(rows) <= PIPED, server
        refused = topologies[servers[0]].calculate(DEEPER)
    # As a syntax error is refused: status 1, one line, no traceback.
    assert (refused.returncode, refused.stdout) == (1, "")
    assert "Traceback" not in refused.stderr and "syntax error" not in refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        f"nested {MAX_NESTING + 1} deep (the limit is {MAX_NESTING}: each level is a promise's "
        "argument inside its parent's, and the SDK's JSON stops at about 1,500 levels)"
    )
