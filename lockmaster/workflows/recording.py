"""What the check and the gate share to record builds and buildsets in the results database
(activities/results.py): the activities' options and the records built from workflow state.

Recording never holds up deciding: the check starts each recording as its build finishes and
waits for them (bounded) only once it has reported; the gate hands them out as Work. A
recording that still fails after RECORD_WINDOW is given up and logged as a warning (the
workflow's log and the worker's), never retried forever; a worker without the activities
(an older orchestrator) fails it at once.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from lockmaster.model.results import RecordResult
    from lockmaster.model.work import WorkOptions

PATCH = "results-database"  # workflow.patched(): histories recorded before replay unchanged
RECORD_WINDOW = timedelta(minutes=10)
RECORD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                           maximum_interval=timedelta(seconds=60),
                           non_retryable_error_types=["NotFoundError"])


def recording() -> bool:
    """Whether this run records (a marker in its history; old histories replay without)."""
    return workflow.patched(PATCH)


async def record(activity: str, arg: object, task_queue: str, what: str) -> None:
    """Run one recording activity; a failure is logged, not raised."""
    try:
        result = await workflow.execute_activity(
            activity, arg, result_type=RecordResult, task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_close_timeout=RECORD_WINDOW, retry_policy=RECORD_RETRY,
            summary=f"record {what}")
    except Exception as exc:  # ActivityError: gave up (logged, the run goes on)
        workflow.logger.warning("results database: %s not recorded: %s", what,
                                getattr(exc, "cause", None) or exc)
        return
    if result.disabled:
        workflow.logger.debug("results database off: %s", result.disabled)


def work_options(task_queue: str) -> WorkOptions:
    """The same, as the gate's Work options."""
    return WorkOptions(task_queue=task_queue, start_to_close=60,
                       schedule_to_close=RECORD_WINDOW.total_seconds(), initial_interval=1.0,
                       maximum_interval=60.0, non_retryable=["NotFoundError"])
