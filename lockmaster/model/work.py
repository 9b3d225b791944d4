"""Work that a long-lived workflow hands out (builds, launches, resets, reports, submits), as
data: carried across continue-as-new, so no run waits for it (see workflows/longlived.py)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lockmaster.model.base import Model


class WorkOptions(Model):
    """How the activity runs: Temporal's activity options, as data."""

    task_queue: str
    start_to_close: float  # seconds
    schedule_to_close: float | None = None
    # No worker took the task this long (its host is down): the round ends.
    schedule_to_start: float | None = None
    heartbeat: float | None = None
    # Retry policy (attempts 0: until it succeeds or its schedule-to-close ends).
    initial_interval: float = 1.0
    maximum_interval: float = 60.0
    maximum_attempts: int = 0
    non_retryable: list[str] = Field(default_factory=list)
    # Cancelling waits until the activity has cleaned up (builds give their nodes back).
    wait_cancellation: bool = False
    # Persistent work, between failed rounds: the first pause, doubling up to the longest.
    round_pause: float = 5.0
    round_pause_max: float = 300.0


class Work(Model):
    """One piece of work in flight: what to run and what it is for (`kind` and `context` name
    the continuation that takes its result, in whichever run receives it)."""

    key: str  # unique within the workflow; the detached child is `<workflow id>/<key>`
    kind: str
    context: dict[str, Any] = Field(default_factory=dict)
    activity: str
    arg: dict[str, Any]
    options: WorkOptions
    summary: str = ""
    # Detached: a child workflow (abandoned by the run that started it) runs the activity and
    # signals its result back, so it outlives continue-as-new. Otherwise it runs in this run and
    # the next run issues it again (it must be idempotent and short).
    detached: bool = False
    # Outlives its run: an activity of the run that issued it (one history event to ask, one to
    # answer, no child workflow), whose result goes to the workflow ID by signal when that run
    # has ended first (temporal/outliving.py). The next run waits for it instead of issuing it
    # again; if nothing says it runs any more (`work-alive`), it ends as lost.
    outlives_run: bool = False
    run_id: str | None = None  # the run that issued it (outlives_run)
    issued_length: int = 0  # the history length when it was issued (outlives_run)
    alive_at: float | None = None  # the last sign of life of an orphan (outlives_run)
    # Never given up: after each failed round the work is reported stuck (visible in status and
    # the Web UI) and tried again, until it succeeds or is cancelled.
    persist: bool = False
    issued: float = 0.0
    started: bool = False  # the detached child is known to run
    # The detached child's workflow ID (`<workflow id>/<key>/<6 hex>`: a key may come again,
    # a closed child's ID is never reused).
    child_id: str | None = None
    cancel_requested: bool = False  # asked to stop (the child is told once it runs)
    # While persistent work keeps failing: since when, how often, the last error.
    stuck_since: float | None = None
    failures: int = 0
    last_error: str | None = None


class WorkDone(Model):
    """The end of a piece of work (the `work-done` signal of a detached child)."""

    key: str
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None
    cancelled: bool = False
    timed_out: bool = False  # the activity hit one of its time limits
    timeout_type: str | None = None  # which: START_TO_CLOSE, HEARTBEAT, ... (TimeoutType name)


class WorkStuck(Model):
    """A detached persistent piece of work failed a round and will try again (`work-stuck`)."""

    key: str
    error: str
    failures: int
    since: float


class WorkAlive(Model):
    """Update `work-alive`: work whose run ended is still running (sent by it periodically)."""

    key: str


class WorkWanted(Model):
    """The answer: whether the workflow still waits for it (False: cancelled or forgotten)."""

    wanted: bool


class StartedQuery(Model):
    """Which of these activities of this run has a worker started (not merely scheduled)?"""

    workflow_id: str
    run_id: str
    activity_ids: list[str]


class StartedAnswer(Model):
    started: list[str]


class DetachedInput(Model):
    """Input of the detached child workflow: the work and whom to tell."""

    parent_id: str
    work: Work
    # The pause before the next failed round (seconds): carried if the child continues as new.
    round_pause: float | None = None


class StuckView(Model):
    """Persistent work that keeps failing, as `status` queries and the Web UI show it."""

    key: str
    what: str
    since: float
    failures: int
    error: str | None = None


def stuck_views(records: dict[str, Work]) -> list[StuckView]:
    return [StuckView(key=w.key, what=w.summary or w.kind, since=w.stuck_since,
                      failures=w.failures, error=w.last_error)
            for w in records.values() if w.stuck_since is not None]
