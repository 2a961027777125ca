"""What the tests share: an independent oracle, requests, processes, and the article's crashes."""

from __future__ import annotations

import ast
import base64
import json
import operator
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import strategies as st
from resonate.resonate import DEFAULT_TTL
from resonate_base import PROTOCOL_VERSION

from resonator.harness.processes import WAIT, Process, Topology, missing
from resonator.parser import render
from resonator.resonator import connect
from resonator.trace import Tracer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from resonate.resonate import Resonate

    from resonator.connections import Connection
    from resonator.parser import Expr, Op

ROOT = Path(__file__).resolve().parent.parent
ARTICLE = "(1 + 2) * (3 - 4)"  # the article's expression: -3
VALUE = r"^-?\d+$"  # a line that is a value

literals = st.integers(min_value=-(10**30), max_value=10**30)
expressions: st.SearchStrategy[Expr] = st.recursive(
    literals,
    lambda children: st.tuples(st.sampled_from(["+", "-", "*"]), children, children),
    max_leaves=24,
)

_BINARY: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
}


def oracle(text: str) -> int:
    """Evaluate ``text`` with Python's own parser: nothing shared with ours.

    Its tree is walked with a stack, as deep as it is: a chain of a thousand
    operators is a thousand levels. (Python's parser itself takes at most 200
    nested parentheses.)
    """
    values: list[int] = []
    # Parenthesised so that newlines inside the text are legal Python too.
    todo: list[tuple[ast.expr, bool]] = [(ast.parse(f"({text})", mode="eval").body, False)]
    while todo:
        node, ready = todo.pop()
        match node:
            case ast.Constant(value=int(n)):
                values.append(n)
            case ast.UnaryOp(op=ast.USub()) if ready:
                values.append(-values.pop())
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                todo += [(node, True), (operand, False)]
            case ast.BinOp(op=op) if ready:
                right, left = values.pop(), values.pop()
                values.append(_BINARY[type(op)](left, right))
            case ast.BinOp(left=left, right=right):
                todo += [(node, True), (right, False), (left, False)]
            case _:
                raise ValueError(ast.dump(node))
    return values[0]


CHAIN = "+".join(["1"] * 1000)  # 999 operators, 999 deep


def balanced(depth: int) -> str:
    """A full tree of ``depth`` levels, without spaces: leaves 1 to 9, operators in turn."""
    level: list[Expr] = [n % 9 + 1 for n in range(2**depth)]
    for height in range(depth):
        op: Op = ("+", "-", "*")[height % 3]
        level = [(op, level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return render(level[0]).replace(" ", "")


def envelope(kind: str, **data: object) -> dict[str, object]:
    """A request to a Resonate server, as the SDK sends it."""
    head = {"corrId": f"c-{kind}", "version": PROTOCOL_VERSION}
    return {"kind": kind, "head": head, "data": data}


def ask(url: str, body: object = None, token: str | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET of ``url``, or of a POST of ``body`` (bytes, or else as JSON)."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@asynccontextmanager
async def embedded(
    name: str = "embedded", keep: int | None = None
) -> AsyncIterator[tuple[Resonate, Connection]]:
    """A started Resonate on the SDK's in-process server, and its connection; stopped afterwards."""
    resonate, connection = connect(None, "prompt", "test", DEFAULT_TTL, Tracer(name), keep=keep)
    resonate.start()
    try:
        yield resonate, connection
    finally:
        await resonate.stop()


def first_logged(said: str) -> float:
    """When a process run with ``-vv`` logged its first line (as its event loop
    started), in seconds since the epoch: a wait measured from there leaves out
    Python's start-up, which a busy machine stretches to seconds."""
    stamp = re.search(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", said, re.MULTILINE)
    assert stamp, said
    return datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def available(server: str) -> str:
    """``server`` (one of ``harness.processes.SERVERS``), or a skip that says why not here."""
    if why := missing(server):
        pytest.skip(why)
    return server


def leased(topology: Topology) -> Topology:
    """The server, exp/lhs, exp/rhs, and an ops worker whose operators take a second."""
    topology.server()
    topology.worker("exp", "lhs")
    topology.worker("exp", "rhs")
    topology.worker("ops", "ops", RESONATOR_OP_DELAY="1")
    return topology


def kill(process: Process) -> None:
    process.signal(signal.SIGKILL)
    process.wait_closed()


def operator_runs(topology: Topology, *names: str) -> Counter[str]:
    """How many times an operator body started, per promise id, in these processes."""
    return Counter(t["id"] for t in topology.traces(*names) if not t["what"].startswith("="))


# ── The article's three failure modes, on any topology set up by ``leased`` ──


def operators_of(topology: Topology, id: str) -> dict[str, int]:
    """How many times each operator of computation ``id`` started on an ops worker."""
    ran = operator_runs(topology, "ops", "another")
    return {promise: n for promise, n in ran.items() if promise.startswith(f"{id}:")}


def operators_ran_once(topology: Topology, id: str) -> None:
    assert operators_of(topology, id) == {f"{id}:1.3": 1, f"{id}:2.3": 1, f"{id}:3": 1}


def an_exp_worker_dies(topology: Topology, id: str) -> None:
    """exp/lhs is killed mid-computation: what is addressed to it waits for its pid."""
    prompt = topology.prompt("--id", id, ARTICLE)
    topology["lhs"].wait_for(rf"^exp/lhs: = 1 \+ 2  \[{id}:1\]$")
    kill(topology["lhs"])
    # exp/rhs does what it can; what is addressed to pid lhs alone waits, unclaimed...
    topology["rhs"].wait_for(rf"^exp/rhs: = 4  \[{id}:2\.2\]$")
    tree = topology.calculate("--tree", "--id", id)
    assert tree.returncode == 0, tree.stderr
    rows = tree.stdout.splitlines()
    unclaimed = {row.split()[-3] for row in rows if row.endswith(" unclaimed")}
    assert "exp/lhs" in unclaimed, tree.stdout
    assert prompt.popen.poll() is None, "the answer came without lhs"
    # ...until a process with that pid is back.
    topology.worker("exp", "lhs")
    assert prompt.wait_for(VALUE).group(0) == "-3"
    assert prompt.wait_closed() == 0


def the_prompt_dies(topology: Topology, id: str) -> None:
    """The prompt is killed mid-computation: another, given the same id, gets the answer."""
    first = topology.prompt("--id", id, ARTICLE, name="first")
    topology["ops"].wait_for(rf"\[{id}:1\.3\]$")  # children dispatched, an operator under way
    kill(first)
    second = topology.prompt("--id", id, ARTICLE, name="second")
    assert second.wait_for(VALUE).group(0) == "-3"
    assert second.wait_closed() == 0
    # The root went on without any prompt: an exp worker replayed it ...
    replays = {t["what"] for t in topology.traces("lhs", "rhs") if t["id"] == id}
    assert f"= {ARTICLE}" in replays
    # ... and no operator that had finished ran again.
    operators_ran_once(topology, id)


def the_ops_worker_dies(topology: Topology, id: str) -> None:
    """The ops worker is killed mid-operation: another ops worker takes the operation up."""
    prompt = topology.prompt("--id", id, ARTICLE)
    topology["ops"].wait_for(rf"^ops/ops: \+ 1 2  \[{id}:1\.3\]$")
    kill(topology["ops"])
    topology.worker("ops", "another", RESONATOR_OP_DELAY="1")
    assert prompt.wait_for(VALUE).group(0) == "-3"
    # The operation that died with its worker was taken up by the other one.
    assert f"{id}:1.3" in operator_runs(topology, "another")


# ── The real server's auth: JWTs signed with an Ed25519 key ─────────────────


def jwt_keys(folder: Path) -> tuple[Path, Path]:
    """A new Ed25519 key pair made by openssl in ``folder``: (private key, public key)."""
    folder.mkdir(parents=True, exist_ok=True)
    key, public = folder / "key.pem", folder / "public.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key], check=True)
    subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", public], check=True)
    return key, public


def signed(claims: dict[str, object], key: Path) -> str:
    """A JWT of ``claims``, signed by openssl with the Ed25519 private key ``key``."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = {"alg": "EdDSA", "typ": "JWT"}
    signing = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
    # Ed25519 signs the whole message at once: openssl takes it from a file.
    message = key.with_suffix(".message")
    message.write_text(signing)
    command = ["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", str(key), "-in", str(message)]
    signature = subprocess.run(command, capture_output=True, check=True)
    return f"{signing}.{b64(signature.stdout)}"


# ── The ops worker in JavaScript ────────────────────────────────────────────

TS = ROOT / "ts"


def javascript() -> list[str]:
    """The command that runs ts/ops.mjs, on the Node 22 that `npm ci` put beside it."""
    node = [*TS.glob("node_modules/node-linux-*/bin/node")] or shutil.which("node")
    if not (node and (TS / "node_modules" / "@resonatehq" / "sdk").is_dir()):
        why = "no Node 22 and TypeScript SDK in ts/node_modules: run `npm ci` in ts/"
        if os.environ.get("CI"):
            pytest.fail(f"{why} (.ci/run does)")
        pytest.skip(why)
    return [str(TS / "node"), str(TS / "ops.mjs")]
