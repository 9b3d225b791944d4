"""An exclusive lock on a file, shared by every process on the machine, usable from asyncio."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

_POLL_START = 0.005
_POLL_MAX = 0.1


@asynccontextmanager
async def file_lock(path: Path) -> AsyncIterator[None]:
    """Hold flock(LOCK_EX) on `path` (created if missing) for the duration of the block.

    Polls with LOCK_NB instead of blocking in a thread: a cancelled waiter then simply stops
    waiting, where a thread stuck in flock() would take the lock later and never release it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        delay = _POLL_START
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _POLL_MAX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
