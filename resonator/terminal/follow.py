"""``--tree --id ID`` and ``--watch --id ID``: a computation that exists, without a prompt."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from resonator.terminal.client import Client, Failed, exit_status
from resonator.terminal.keys import CtrlC

if TYPE_CHECKING:
    import argparse

    from resonate.resonate import Resonate

    from resonator.connections import Connection


def follow(resonate: Resonate, connection: Connection, args: argparse.Namespace) -> int:
    """The tree of ``args.id`` as it stands, or as it changes until it settles; the exit status."""
    return exit_status(following(Client(resonate, connection), args.id, args.watch))


async def following(client: Client, id: str, watch: bool) -> int:
    keys = CtrlC()
    async with client:
        await keys.wait(client.ready())
        try:
            if watch:
                return 0 if await keys.wait(client.watch(id)) else 1
            print(await keys.wait(client.drawn_tree(id)), flush=True)
        except Failed as failure:
            print(failure, file=sys.stderr)
            return 1
    return 0
