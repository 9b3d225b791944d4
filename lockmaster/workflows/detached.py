"""`<parent id>/<work key>`: one piece of a long-lived workflow's work that must outlive the run
that started it (a build, a launch, a TE reset, a report that Gerrit keeps refusing).

The parent starts it as a child with the abandon policy, records it in its carried state and
goes on deciding; it may continue as new at any moment. This workflow runs the activity and
signals `work-done` to the parent's workflow ID, which reaches whichever run is current.
Persistent work never gives up: after each failed round it signals `work-stuck` (the parent
shows it) and tries again after a growing pause, until it succeeds or is cancelled.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from lockmaster.model.work import DetachedInput, WorkDone, WorkStuck
    from lockmaster.workflows.work_options import activity_options, permanent, timeout_type

WORK_DONE = "work-done"
WORK_STUCK = "work-stuck"


def detached_id(parent_id: str, key: str) -> str:
    return f"{parent_id}/{key}"


@workflow.defn(name="DetachedWorkWorkflow")
class DetachedWorkWorkflow:
    @workflow.run
    async def run(self, inp: DetachedInput) -> WorkDone:
        work = inp.work
        pause = inp.round_pause or work.options.round_pause
        parent = workflow.get_external_workflow_handle(inp.parent_id)
        while True:
            try:
                result = await workflow.execute_activity(
                    work.activity, work.arg, result_type=dict, summary=work.summary or None,
                    **activity_options(work.options))
                done = WorkDone(key=work.key, ok=True, result=result)
            except asyncio.CancelledError:
                done = WorkDone(key=work.key, ok=False, cancelled=True, error="cancelled")
            except ActivityError as exc:
                error = str(exc.cause or exc)
                if work.persist and not permanent(exc):
                    work.failures += 1
                    work.last_error = error
                    if work.stuck_since is None:
                        work.stuck_since = workflow.now().timestamp()
                    await self._tell(parent, WORK_STUCK, WorkStuck(
                        key=work.key, error=error, failures=work.failures,
                        since=work.stuck_since))
                    workflow.set_current_details(
                        f"**stuck** since {work.stuck_since:.0f} after {work.failures} failed "
                        f"round(s): {error}")
                    try:
                        await workflow.sleep(timedelta(seconds=pause))
                    except asyncio.CancelledError:
                        done = WorkDone(key=work.key, ok=False, cancelled=True,
                                        error="cancelled")
                    else:
                        pause = min(pause * 2, work.options.round_pause_max)
                        if workflow.info().is_continue_as_new_suggested():
                            workflow.continue_as_new(inp.model_copy(
                                update={"round_pause": pause}))
                        continue
                else:
                    done = WorkDone(key=work.key, ok=False, error=error,
                                    timed_out=isinstance(exc.cause, ActivityTimeout),
                                    timeout_type=timeout_type(exc))
            await self._tell(parent, WORK_DONE, done)
            return done

    @staticmethod
    async def _tell(parent: workflow.ExternalWorkflowHandle, signal: str,
                    payload: WorkDone | WorkStuck) -> None:
        try:
            await parent.signal(signal, payload)
        except Exception as exc:  # the parent is gone (terminated): nobody to tell
            workflow.logger.warning("could not tell %s: %s", signal, exc)
