"""Processes up for longer than the SDK's stream timeout still get work at once.

The SDK's SSE stream used aiohttp's default session timeout, 300 s in total;
when it fired, the listener ended silently and the process never heard from
the server again (see ``connections.KeepListening``). These processes were
started when the test session began, so most of the wait passes while the
rest of the suite runs.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from resonator.harness.processes import Topology

pytestmark = pytest.mark.long_lived

UPTIME = 310.0  # seconds: the SDK's timeout, and some


def test_workers_and_a_prompt_up_for_minutes_still_get_work_at_once(long_lived: Topology) -> None:
    prompt, server = long_lived["prompt"], long_lived["server"]
    first = prompt.send("1 + 2")
    assert prompt.wait_for(r"^-?\d+$", after=first).group(0) == "3"
    # Waiting for time to pass is the point here: no event stands for it.
    time.sleep(max(0.0, long_lived.started + UPTIME - time.monotonic()))
    later = prompt.send("(1 + 2) * (3 - 4)")
    # "At once": well before the SDK's own fallback, a refresh each minute.
    assert prompt.wait_for(r"^-?\d+$", after=later, timeout=20).group(0) == "-3"
    # All four streams (lhs, rhs, ops, prompt) stayed open the whole time.
    opened = [line for line in server.lines if re.match(r"stream opened: ", line)]
    closed = [line for line in server.lines if re.match(r"stream closed: ", line)]
    assert len(opened) == 4, server.lines
    assert closed == []
    assert not any("cannot reach" in line for p in long_lived.history for line in p.lines)
