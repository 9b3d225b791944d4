"""Activities that outlive the workflow run that asked for them (the gate's builds).

A long-lived workflow continues as new whenever it is due, with builds in flight. A build is an
ordinary activity of the run that issued it (three history events, no child workflow: at two
approvals a second a child per build cost the gate a third of its speed, docs/benchmarks.md).
If that run ends first, the activity cannot complete into it, so the result goes to the
workflow ID instead:

- while the run lives, the activity completes as any other (completed here, by its task token,
  so that a run closed meanwhile is known for certain: the completion is refused);
- when its heartbeat finds the run gone, the activity is not stopped: it runs on, asks the
  workflow every half heartbeat timeout whether it is still wanted (update `work-alive`: the
  next run answers, and stops waiting for it if it hears nothing), and stops if not;
- its result (or error), when the run is gone, is signalled as `work-done` to the workflow ID,
  whichever run is current (workflows/longlived.py takes it); an orphan whose worker shuts down
  stops and says so; one whose process dies says nothing, and is declared lost.

The workflow marks such activities by their activity ID (`outlives-run/<work key>`); any other
activity runs unchanged. One that no worker has started when the run ends would never start:
before continuing as new, the workflow asks (`started_activities`, a local activity) and the
next run issues those again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio import activity
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.model.work import StartedAnswer, StartedQuery, WorkAlive, WorkDone, WorkWanted

T = TypeVar("T")
PREFIX = "outlives-run/"
log = logging.getLogger(__name__)


def activity_id(key: str) -> str:
    return PREFIX + key


def work_key() -> str | None:
    """The work key of the current activity if it outlives its run, else None."""
    if not activity.in_activity():
        return None
    current = activity.info().activity_id
    return current[len(PREFIX):] if current.startswith(PREFIX) else None


async def outliving(body: Coroutine[Any, Any, T]) -> T:
    """Run the activity's body; deliver its result to the run that asked, or to its successor."""
    key = work_key()
    if key is None:
        return await body
    info = activity.info()
    task: asyncio.Future[T] = asyncio.ensure_future(body)
    orphaned: asyncio.Task[None] | None = None
    try:
        while True:
            try:
                if orphaned is not None:
                    await _unless_shutting_down(task)
                result = await asyncio.shield(task)
                break
            except asyncio.CancelledError:
                details = activity.cancellation_details()
                if orphaned is None and details is not None and details.not_found \
                        and not task.done():
                    log.info("%s: the run that asked ended; running on for its successor", key)
                    orphaned = asyncio.ensure_future(_keep_asking(info, key, task))
                    continue
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task  # it cleans up (a build gives its nodes back)
                if orphaned is not None and task.cancelled():
                    activity.raise_complete_async()  # no longer wanted: nobody waits
                raise
            except WorkerShuttingDown:
                # The SDK does not cancel an activity twice: an orphan stops here, and says so,
                # so that the next run need not wait until it is declared lost.
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                await _tell(info, WorkDone(key=key, ok=False,
                                           error="its executor shut down while it ran"))
                activity.raise_complete_async()
            except Exception as exc:
                if orphaned is None:
                    raise
                await _tell(info, WorkDone(key=key, ok=False, error=f"{type(exc).__name__}: "
                                                                   f"{exc}"))
                activity.raise_complete_async()
    finally:
        if orphaned is not None:
            orphaned.cancel()
    if orphaned is None:
        handle = activity.client().get_async_activity_handle(task_token=info.task_token)
        try:
            await handle.complete(result)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        else:
            activity.raise_complete_async()  # completed above: the worker must not again
    data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    await _tell(info, WorkDone(key=key, ok=True, result=data))
    activity.raise_complete_async()


class WorkerShuttingDown(Exception):
    pass


async def _unless_shutting_down(task: asyncio.Future[Any]) -> None:
    shutdown = asyncio.ensure_future(activity.wait_for_worker_shutdown())
    try:
        await asyncio.wait({task, shutdown}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        shutdown.cancel()
    if not task.done():
        raise WorkerShuttingDown()


@activity.defn(name="started_activities")
async def started_activities(query: StartedQuery) -> StartedAnswer:
    """A local activity of the workflow about to continue as new: which of its activities a
    worker has started. One only scheduled (no worker took it yet, or waiting to be tried
    again) would never run once the run has ended: the next run issues it again."""
    handle = activity.client().get_workflow_handle(query.workflow_id, run_id=query.run_id)
    described = await handle.describe()
    wanted = set(query.activity_ids)
    started = [p.activity_id for p in described.raw_description.pending_activities
               if p.activity_id in wanted
               and p.state != PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED]
    return StartedAnswer(started=started)


async def _tell(info: activity.Info, done: WorkDone) -> None:
    handle = activity.client().get_workflow_handle(info.workflow_id)
    try:
        await handle.signal("work-done", done)
    except RPCError as exc:  # the workflow is gone altogether: nobody is left to tell
        log.warning("%s: could not deliver its result to %s: %s", done.key, info.workflow_id,
                    exc)


async def _keep_asking(info: activity.Info, key: str, task: asyncio.Future[Any]) -> None:
    """While orphaned: say it still runs, and stop the work when the workflow no longer wants
    it (cancelled, or given up as lost)."""
    every = (info.heartbeat_timeout or timedelta(seconds=20)).total_seconds() / 2
    handle = activity.client().get_workflow_handle(info.workflow_id)
    while not task.done():
        try:
            answer = await handle.execute_update("work-alive", WorkAlive(key=key),
                                                 result_type=WorkWanted)
            if not answer.wanted:
                log.info("%s: no longer wanted by %s; stopping", key, info.workflow_id)
                task.cancel()
                return
        except Exception as exc:  # continuing as new, or the server busy: ask again later
            log.debug("%s: work-alive not answered: %s", key, exc)
        await asyncio.sleep(every)
