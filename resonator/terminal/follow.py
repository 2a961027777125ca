"""``--tree --id ID`` and ``--watch --id ID``: a computation that exists, without a prompt."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from resonator.client.calculator import Calculator, Failed
from resonator.terminal.drawing import draw, screen, watch
from resonator.terminal.keys import CtrlC, exit_status

if TYPE_CHECKING:
    import argparse

    from resonate.resonate import Resonate

    from resonator.connections import Connection


def follow(computations: Resonate, connection: Connection, args: argparse.Namespace) -> int:
    """The tree of ``args.id`` as it stands, or as it changes until it settles; the exit status."""
    return exit_status(following(Calculator(computations, connection), args.id, args.watch))


async def following(calculator: Calculator, id: str, live: bool) -> int:
    keys = CtrlC()
    async with calculator:
        await keys.wait(calculator.ready())
        try:
            if live:
                return 0 if await keys.wait(watch(calculator.follow(id))) else 1
            root = await keys.wait(calculator.tree(id))
            print(draw(root, screen()), flush=True)
        except Failed as failure:
            print(failure, file=sys.stderr)
            return 1
    return 0
