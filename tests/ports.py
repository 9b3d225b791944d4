"""Ports for servers the tests start on loopback."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port() -> int:
    """A port free right now (the kernel's choice, from the ephemeral range)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def restartable_port(below: int | None = None) -> int:
    """A free port below the ephemeral range, for a server a test stops and starts again on
    the same port. The Temporal dev server picks its internal services' ports from the ephemeral
    range, where the kernel readily hands out a port just released: a restarted dev server can
    pick its own frontend port for an internal service, fail to bind it and crash."""
    low = min(_ephemeral_low(), below or 65536)
    for _ in range(200):
        port = random.randint(max(1024, low - 12000), low - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below the ephemeral range (from {low})")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
