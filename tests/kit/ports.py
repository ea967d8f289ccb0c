"""Ports for the services a test starts itself, chosen below the kernel's ephemeral range.

Why below it: a port the OS picks for ``bind(0)`` comes from the ephemeral range, the range it
also takes the source ports of outgoing connections from. Free when it was chosen, such a port
can be taken by any connection in the seconds before the service binds it: a three-broker test
lost its SASL listener that way ("Address already in use") while the other brokers connected.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_given: set[int] = set()  # handed out in this process: never twice, even before they are bound


def ephemeral_floor() -> int:
    """The first port of the kernel's ephemeral range (32768 where it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive ports that nothing listens on now and that this process
    has not handed out before, below the ephemeral range; the search starts at a place of its
    own per process, so test runs side by side rarely probe the same ports."""
    floor = ephemeral_floor()
    start = 20_000 + os.getpid() % 5_000
    for base in range(start, floor - count):
        ports = range(base, base + count)
        if not _given.intersection(ports) and all(_bindable(port) for port in ports):
            _given.update(ports)
            return base
    raise RuntimeError(f"no {count} consecutive free ports between {start} and {floor}")
