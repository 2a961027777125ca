"""resonator-demo, as CI and a newcomer run it: piped, and stopped with Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter

from resonator.harness.processes import TRACE, WAIT

DEMO = [sys.executable, "-m", "resonator.terminal.demo"]


def test_every_scenario_heals_and_the_counts_it_reports_are_the_workers_own(server: str) -> None:
    done = subprocess.run(
        [*DEMO, "--server", server], capture_output=True, text=True, timeout=3 * WAIT, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\x1b" not in done.stdout
    lines = done.stdout.splitlines()
    answers = [line for line in lines if re.match(r"^> \S+ printed ", line)]
    assert [line.rsplit(" printed ", 1)[1] for line in answers] == ["-3: right"] * 3
    # What the demo says of each operator, against the trace lines it echoed.
    traces = [m for line in lines if (m := TRACE.match(line.strip()))]
    ran = Counter(m["id"] for m in traces if not m["what"].startswith("="))
    said = {
        m[1]: {"once": 1, "twice": 2}.get(m[2]) or int(m[2].split()[0])
        for line in lines
        if (m := re.match(r"^> [-+*] \S+ \S+ \[(\S+)\] ran (once|twice|\d+ times)", line))
    }
    assert said == dict(ran)
    assert len(said) == 9  # three operators in each of three computations
    # Scenario 2 killed a worker in the middle of + 1 2: that ran twice (and so
    # did - 3 4, if the same worker had it). Nothing else ran more than once.
    again = {id for id, count in said.items() if count > 1}
    assert "demo-2:1.3" in again
    assert again <= {"demo-2:1.3", "demo-2:2.3"}
    assert "Traceback" not in done.stdout + done.stderr


def test_ctrl_c_stops_the_demo_and_every_process_it_started() -> None:
    # In a process group of its own, as in a terminal: Ctrl-C signals the whole group.
    demo = subprocess.Popen(
        DEMO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if line.startswith("> killed lhs"):
                break
        os.killpg(demo.pid, signal.SIGINT)
        rest = demo.stdout.read()
        assert demo.wait(WAIT) == 130
    finally:
        if demo.poll() is None:
            demo.kill()
    assert "> stopped: every process the demo started is stopped too" in rest
    assert "Traceback" not in rest
    try:
        os.killpg(demo.pid, 0)
    except ProcessLookupError:
        pass  # nobody is left in its group
    else:
        os.killpg(demo.pid, signal.SIGKILL)
        raise AssertionError("a process the demo started outlived it")
