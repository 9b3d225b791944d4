"""What the long-lived workflows share: their in-flight work as tracked asyncio tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


def spawn(coro: Coroutine[Any, Any, None], tasks: set[asyncio.Task[None]],
          on_done: Callable[[], None]) -> asyncio.Task[None]:
    """Run `coro` as a task kept in `tasks` until it ends, then call `on_done` (the workflows
    wake their main loop with it: a finished task may change what to do next, and
    continue-as-new waits for `tasks` to empty)."""
    task: asyncio.Task[None] = asyncio.ensure_future(coro)
    tasks.add(task)

    def done(t: asyncio.Task[None]) -> None:
        tasks.discard(t)
        on_done()

    task.add_done_callback(done)
    return task
