"""Input, output and query models of the check (independent pipeline) workflow."""

from __future__ import annotations

from pydantic import Field

from lockmaster.model.base import Model
from lockmaster.model.build import Artifact, BuildResult, JobSpec, Result
from lockmaster.model.change import ChangeRef


class ReportLabels(Model):
    start: dict[str, int] | None = None  # None: no start report
    success: dict[str, int] = Field(default_factory=dict)
    failure: dict[str, int] = Field(default_factory=dict)
    # Reports when a change enters, and when it leaves without a result (dequeued, superseded
    # by a new patchset, abandoned): None, not reported (Zuul's default).
    enqueue: dict[str, int] | None = None
    dequeue: dict[str, int] | None = None
    # A pipeline's own first line per action (start, success, failure, dequeue, enqueue).
    messages: dict[str, str] = Field(default_factory=dict)
    # The web service's public URL (web.url): the start and enqueue reports link to the
    # change's status-page entry, <status_url>/change/<N>. None: no link (older inputs).
    status_url: str | None = None


class CheckInput(Model):
    change: ChangeRef
    pipeline: str
    jobs: list[JobSpec]  # frozen when the change entered the pipeline
    labels: ReportLabels = Field(default_factory=ReportLabels)
    trigger: str = ""  # identity of the event that started this run (duplicate detection)
    task_queue_prefix: str = "lockmaster"
    precedence: int = 1  # of its node requests (0 high, 1 normal, 2 low)
    # Activity tuning (tests lower these to notice a dead worker quickly).
    build_heartbeat_timeout: float = 30.0
    # A rerun of one job: what the jobs it depends on made in the run before (handed to it).
    given_artifacts: list[Artifact] = Field(default_factory=list)
    # Zuul's fail-fast (the project's pipeline setting) and the pipeline's ignore-dependencies.
    fail_fast: bool = False
    ignore_dependencies: bool = False
    # The pipeline's `require`: the changes this one needs must meet it too (Zuul checks the
    # requirements of every change it enqueues, non-live ones included).
    require: dict[str, int] = Field(default_factory=dict)


class DependencyUpdated(Model):
    """Signal `dependency-updated`: a change this run tests with has a new patchset."""

    connection: str
    project: str
    number: int
    patchset: int


class JobStatus(Model):
    name: str
    voting: bool
    state: str  # waiting, running, or a final Result
    attempt: int = 0
    log_url: str | None = None
    started: float | None = None
    # Why it did not succeed (the last attempt's message, or why it was skipped).
    reason: str | None = None


class CheckStatus(Model):
    """What the `status` query answers while the check runs."""

    change: ChangeRef
    pipeline: str
    phase: str  # resolving, merging, running, reporting, done
    changes: str = ""  # speculative state, `N,P N,P`
    jobs: list[JobStatus] = Field(default_factory=list)
    # Once done: SUCCESS, FAILURE, MERGE_CONFLICT, ... (as the `Result` search attribute), and
    # one line saying why when it did not succeed.
    result: str | None = None
    reason: str | None = None
    # Cancelled, and its dequeue report (if the pipeline has one) made: the change's next run
    # may report its start.
    dequeue_reported: bool = False


class StatusQuery(Model):
    """No arguments; a model so that every query takes one model in."""


class CheckOutcome(Model):
    change: ChangeRef
    pipeline: str
    # SUCCESS / FAILURE for a buildset; MERGE_CONFLICT, CONFIG_ERROR, NO_JOBS otherwise.
    result: str
    message: str
    builds: list[BuildResult] = Field(default_factory=list)
    job_results: dict[str, Result] = Field(default_factory=dict)
    changes: str = ""
    # A rerun's: the artifacts it was given (so a rerun of a rerun still has them).
    given_artifacts: list[Artifact] = Field(default_factory=list)
