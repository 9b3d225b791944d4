"""Calls to a long-lived workflow that is busy for a moment: asked again, within a bound.

Temporal refuses a signal or an update for a moment when the workflow cannot take it now: too
many updates in flight or a continue-as-new being retried (RESOURCE_EXHAUSTED, "workflow is
closing"), or a run between two workflow tasks (FAILED_PRECONDITION, "workflow task ...",
"... closed before WorkflowTaskStarted event": a query that met a continue-as-new).
Nothing was done, so the call is made again after a jittered pause that doubles; an error of
any other kind, or one that lasts past `patience`, goes to the caller.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.service import RPCError, RPCStatusCode

T = TypeVar("T")

FIRST_PAUSE = 0.1
LONGEST_PAUSE = 2.0
PATIENCE = 120.0  # a refused continue-as-new replays the whole run first: seconds, not minutes


def busy(exc: BaseException) -> bool:
    """The workflow refused the call for a moment (nothing was done), it is not gone."""
    return isinstance(exc, RPCError) and (
        exc.status is RPCStatusCode.RESOURCE_EXHAUSTED
        or (exc.status is RPCStatusCode.FAILED_PRECONDITION
            and "workflowtask" in str(exc).lower().replace(" ", "")))


async def when_not_busy(call: Callable[[], Awaitable[T]], *, patience: float = PATIENCE,
                        longest_pause: float = LONGEST_PAUSE) -> T:
    """`call()`, made again while the workflow is busy, for at most `patience` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    pause = FIRST_PAUSE
    while True:
        try:
            return await call()
        except RPCError as exc:
            if not busy(exc) or loop.time() + pause > deadline:
                raise
        await asyncio.sleep(pause * random.uniform(0.5, 1.0))
        pause = min(pause * 2, longest_pause)
