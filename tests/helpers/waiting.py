"""Waiting without sleeps, free loopback ports, and where the repository is."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, timeout_s: float, interval_s: float = 0.05
) -> None:
    """Wait until `condition()` holds, for at most `timeout_s` (TimeoutError otherwise).

    For states with nothing to await (another process, an HTTP probe, a counter). A bounded
    poll, not a sleep standing in for synchronisation.
    """
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 - no event exists to wait on
            await asyncio.sleep(interval_s)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports nobody listens on (for a server that
    takes a base port and the ones after it)."""
    for _ in range(50):
        base = closed_port()
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError(f"no {count} consecutive free loopback ports found")


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent.parent
