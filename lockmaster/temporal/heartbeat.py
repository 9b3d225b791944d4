"""Heartbeating for long activities, written once: builds, launches, deletions, TE resets and
publications all use it.

A long activity heartbeats on a timer while its body waits (on a cloud, a TE lock, a thread), so
a dead worker is noticed within the heartbeat timeout and a cancellation reaches it. The detail
sent is what the activity says it is doing now (`beat("uploading ...")`, callable from any
thread). Outside an activity (direct calls in tests and benchmarks) nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

from temporalio import activity

DEFAULT_EVERY = 2.0  # seconds between heartbeats when the activity's timeout does not say


class Beat:
    """The activity's current progress line; calling it sets the line (thread-safe)."""

    def __init__(self, detail: str) -> None:
        self._detail = detail
        self._lock = threading.Lock()

    def __call__(self, detail: str) -> None:
        with self._lock:
            self._detail = detail

    @property
    def detail(self) -> str:
        with self._lock:
            return self._detail


def send(detail: str | None = None) -> None:
    """One heartbeat now (from the event loop's thread; activity.heartbeat is not thread-safe)."""
    with contextlib.suppress(RuntimeError):  # not in an activity
        if detail is None:
            activity.heartbeat()
        else:
            activity.heartbeat(detail)


def interval(every: float | None = None) -> float | None:
    """Seconds between heartbeats: `every`, but at most a third of the activity's heartbeat
    timeout; None when there is neither (outside an activity, or no timeout and no `every`)."""
    try:
        timeout = activity.info().heartbeat_timeout
    except RuntimeError:
        timeout = None
    if timeout:
        third = timeout.total_seconds() / 3
        return min(every, third) if every else third
    return every


@contextlib.asynccontextmanager
async def heartbeating(detail: str = "running", every: float | None = DEFAULT_EVERY
                       ) -> AsyncIterator[Beat]:
    """Heartbeat the Beat's line every `interval(every)` seconds while the block runs."""
    beat = Beat(detail)
    seconds = interval(every)
    if seconds is None:
        yield beat
        return

    async def pump() -> None:
        while True:
            send(beat.detail)
            await asyncio.sleep(seconds)

    task = asyncio.create_task(pump())
    try:
        yield beat
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
