"""Scenario time: seconds since the scenario started (wall clock, as the review system's
timestamps are)."""

from __future__ import annotations

import asyncio
import time


class Clock:
    def __init__(self) -> None:
        self.epoch = time.time()

    def start(self) -> None:
        """The scenario starts now: every time reported is relative to this moment."""
        self.epoch = time.time()

    def now(self) -> float:
        return time.time() - self.epoch

    def since_start(self, epoch_seconds: float) -> float:
        """A review-system timestamp (seconds since the epoch) in scenario time."""
        return epoch_seconds - self.epoch

    async def sleep_until(self, at: float) -> None:
        delay = at - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
