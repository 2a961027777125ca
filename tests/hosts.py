"""Machines on one machine, for the tests: network namespaces joined by a switch.

Each host is a network namespace with a loopback and one interface, ``eth0``,
cabled (a veth pair) to a bridge that has a namespace of its own. Nothing is
routed beyond the hosts' subnet, so a process on a host reaches the other
hosts and nothing else. Cutting a host's cable at the switch (``cut``) is a
partition: its processes go on running, and what they send waits in TCP's
retransmissions until the cable is back (``mend``).

Namespaces take root. ``Hosts`` raises ``Unavailable``, saying why, when
they cannot be made; everything it makes is named after a tag of its own,
on addresses of its own, and removed when its ``with`` block ends, however
it ends, every process left on a host killed first.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import threading
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

SWITCH = "switch"  # the bridge, and the name of its namespace after the tag


class Unavailable(Exception):
    """Network namespaces cannot be made here; the message says why."""


def ip(*args: str) -> str:
    """Run ``ip ARGS``; what it printed, or a ``RuntimeError`` with what it said."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class Hosts:
    """Named hosts on one subnet, ``10.a.b.0/24`` with ``a`` and ``b`` drawn at random."""

    def __init__(self, *names: str) -> None:
        self.tag = f"rz{secrets.token_hex(3)}"  # unique to this run
        subnet = f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}"
        self.addresses = {name: f"{subnet}.{n}" for n, name in enumerate(names, start=2)}
        self.made: list[str] = []  # namespaces made so far, to remove

    def namespace(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def __enter__(self) -> Self:
        if os.geteuid() != 0:
            raise Unavailable("network namespaces need root")
        if shutil.which("ip") is None:
            raise Unavailable("no `ip` command (iproute2)")
        try:
            self.build()
        except BaseException as error:
            self.remove()
            if isinstance(error, RuntimeError):
                raise Unavailable(f"cannot make network namespaces: {error}") from None
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()

    def build(self) -> None:
        switch = self.namespace(SWITCH)
        for name in [SWITCH, *self.addresses]:
            ip("netns", "add", self.namespace(name))
            self.made.append(self.namespace(name))
            ip("-n", self.namespace(name), "link", "set", "lo", "up")
        ip("-n", switch, "link", "add", SWITCH, "type", "bridge")
        ip("-n", switch, "link", "set", SWITCH, "up")
        for name, address in self.addresses.items():
            host = self.namespace(name)
            # The switch's end of the cable is named after the host.
            cable = ["type", "veth", "peer", "name", "eth0", "netns", host]
            ip("-n", switch, "link", "add", name, *cable)
            ip("-n", switch, "link", "set", name, "master", SWITCH, "up")
            ip("-n", host, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", host, "link", "set", "eth0", "up")

    def remove(self) -> None:
        """Kill whatever runs on the hosts, then remove them (their cables go with them).

        Every namespace is tried, even after one fails; then the first failure is raised.
        """
        failures = []
        for namespace in reversed(self.made):
            try:
                for pid in ip("netns", "pids", namespace).split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                ip("netns", "del", namespace)
            except RuntimeError as error:
                failures.append(error)
        self.made.clear()
        if failures:
            raise failures[0]

    def on(self, name: str) -> list[str]:
        """The command prefix that runs a program on host ``name``."""
        return ["ip", "netns", "exec", self.namespace(name)]

    def cut(self, name: str) -> None:
        ip("-n", self.namespace(SWITCH), "link", "set", name, "down")

    def mend(self, name: str) -> None:
        ip("-n", self.namespace(SWITCH), "link", "set", name, "up")

    def inside[T](self, name: str, function: Callable[[], T]) -> T:
        """What ``function`` returns, called on host ``name``: its sockets are the host's.

        It runs in a thread of its own, which alone joins the host's network
        namespace (a namespace belongs to a thread, not to the process).
        """
        results: list[T] = []
        errors: list[BaseException] = []

        def in_namespace() -> None:
            try:
                with open(f"/run/netns/{self.namespace(name)}") as namespace:
                    os.setns(namespace.fileno(), os.CLONE_NEWNET)
                results.append(function())
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=in_namespace)
        thread.start()
        thread.join()
        if errors:
            raise errors[0]
        return results[0]
