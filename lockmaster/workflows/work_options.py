"""Temporal activity options from `WorkOptions` (data carried in workflow state)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeout

from lockmaster.model.work import WorkOptions


def activity_options(options: WorkOptions) -> dict[str, Any]:
    """Keyword arguments of `workflow.execute_activity` for `options`."""
    return {
        "task_queue": options.task_queue,
        "start_to_close_timeout": timedelta(seconds=options.start_to_close),
        "schedule_to_close_timeout": timedelta(seconds=options.schedule_to_close)
        if options.schedule_to_close else None,
        "schedule_to_start_timeout": timedelta(seconds=options.schedule_to_start)
        if options.schedule_to_start else None,
        "heartbeat_timeout": timedelta(seconds=options.heartbeat) if options.heartbeat else None,
        "retry_policy": RetryPolicy(
            initial_interval=timedelta(seconds=options.initial_interval),
            maximum_interval=timedelta(seconds=options.maximum_interval),
            maximum_attempts=options.maximum_attempts,
            non_retryable_error_types=list(options.non_retryable) or None),
        "cancellation_type": workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        if options.wait_cancellation else workflow.ActivityCancellationType.TRY_CANCEL,
    }


def permanent(exc: ActivityError) -> bool:
    """The activity said trying again cannot help (a non-retryable application error)."""
    return isinstance(exc.cause, ApplicationError) and exc.cause.non_retryable


def timeout_type(exc: ActivityError) -> str | None:
    """Which of its limits the activity hit (None: it failed otherwise)."""
    cause = exc.cause
    return cause.type.name if isinstance(cause, ActivityTimeout) and cause.type else None


def retry_fields(policy: RetryPolicy) -> dict[str, Any]:
    """`WorkOptions` fields for an existing RetryPolicy (the workflows' named policies)."""
    return {
        "initial_interval": policy.initial_interval.total_seconds(),
        "maximum_interval": (policy.maximum_interval or policy.initial_interval * 100
                             ).total_seconds(),
        "maximum_attempts": policy.maximum_attempts,
        "non_retryable": list(policy.non_retryable_error_types or []),
    }
