"""Whether the server takes the promise ids this SDK mints: asked once, before any work.

A workaround for resonate 0.9.8 (the server's newest release): resonate-sdk
0.8 names the n-th call made by promise ``root`` ``root:n``
(``resonate/ids.py``), as the 0.10 server's rule has it. Resonate 0.9 wants
``root.n``, and answers the creation of every child promise with ``400
Promise ID must be prefixed by resonate:origin``.
The SDK then lets the task go, the server sends it again, and the process
spins, four times a second, without a word: the SDK has no hook that would
notice. So each process asks, once its server answers: it creates one child
promise, timed out from the start, that nothing will ever run.

``Link`` (``link.py``) asks, the first time the server answers, and counts a
refusal as the server turning the process away. Shown on the released
server by ``tests/test_upstream.py::test_resonate_0_9_8_takes_the_child_ids_of_sdk_0_8``,
a strict xfail. Delete this module, and the check in ``link.py``, once no
server in use refuses these ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resonate.error import ServerError
from resonate.ids import join_id
from resonate.types import PromiseCreateReq

if TYPE_CHECKING:
    from resonate.send import Sender

CHECK_ROOT = "resonator-probe"  # the root of the child promise the check creates
WORKING = (
    "resonator-devserver, Resonate on Postgres (resonator-postgres), "
    "or a resonate server with the 0.10 id rule"
)


async def refused_ids(sender: Sender, url: str) -> str | None:
    """What to say if the server at ``url`` refuses the ids of this SDK; None if it takes them."""
    tags = {"resonate:origin": CHECK_ROOT}
    try:
        await sender.promise_create(PromiseCreateReq(id=join_id(CHECK_ROOT, "1"), tags=tags))
    except ServerError as error:
        if error.code != 400:
            raise
        return (
            f"the Resonate server at {url} refuses the promise ids of resonate-sdk 0.8 "
            f"({error.code} {error.message}): use {WORKING} (docs/servers.md)"
        )
    return None
