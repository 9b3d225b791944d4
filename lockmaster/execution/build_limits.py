"""How long a build may take, phase by phase, and what a build activity that ended without an
answer means (Zuul's timeout semantics).

A build's phases and their bounds (seconds):
- waiting for nodes: the job's `node-wait-timeout`, else NODE_WAIT (a backstop, not a policy:
  Zuul waits for nodes as long as it takes) -> NODE_FAILURE when exceeded;
- waiting for a TE (jobs with `testenv`): the job's `te-wait-timeout`, else TE_WAIT ->
  NODE_FAILURE; not part of the job's timeout unless the job sets `timeout-includes-te-wait`;
- workspace preparation, pre-run and run: the job's `timeout` -> TIMED_OUT;
- post-run: min(timeout, post_run); artifacts: `artifacts`; each cleanup step: `cleanup`.

The build activity's start-to-close limit is strictly larger than their sum, so the runner
always answers first (TIMED_OUT, NODE_FAILURE, ...) and Temporal's limit is only reached when
something is really stuck; a dead executor is noticed by the heartbeat timeout long before.

Pure: imported by the workflows (through the sandbox) and by the runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, TimeoutError, TimeoutType

from lockmaster.model.build import JobSpec, Result

DAY = 86400.0
NODE_WAIT = 7 * DAY
TE_WAIT = 7 * DAY
POST_RUN = 600.0
# Copying the artifacts back (the job's budget may be spent): 512 MiB (artifacts.MAX_BYTES) at
# ~10 MB/s takes under a minute; a node that takes ten is as good as lost.
ARTIFACTS = 600.0
CLEANUP = 300.0
# What no bound covers: local bookkeeping (logs, temporary files), heartbeats, clock skew.
SLACK = 600.0

# The server retries an activity's start-to-close timeout like any failure unless told not to
# (server: "TemporalTimeout:" + the timeout type's name). A build that ran into its limit timed
# out: running it again would only time out again (and wrongly report a rerun). Both spellings
# of the name, as servers have printed the enum either way.
BUILD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_attempts=3,
    non_retryable_error_types=["TemporalTimeout:StartToClose",
                               "TemporalTimeout:TIMEOUT_TYPE_START_TO_CLOSE"],
)


@dataclass(frozen=True)
class BuildLimits:
    """The runner's bounds on the phases outside the job's own timeout (seconds). The defaults
    are what executors enforce and what the workflows size the activity by; tests shrink them."""

    node_wait: float = NODE_WAIT
    te_wait: float = TE_WAIT
    post_run: float = POST_RUN
    artifacts: float = ARTIFACTS
    cleanup: float = CLEANUP
    slack: float = SLACK

    def node_wait_for(self, job: JobSpec) -> float:
        return job.node_wait_timeout if job.node_wait_timeout is not None else self.node_wait

    def te_wait_for(self, job: JobSpec) -> float:
        """The bound on the TE wait (its own, even when it also counts against the timeout)."""
        return job.te_wait_timeout if job.te_wait_timeout is not None else self.te_wait

    def post_run_for(self, job: JobSpec) -> float:
        # Post-run may still collect logs after a timeout, but a short job gets a short one.
        return min(job.timeout, self.post_run)

    def runner_bound(self, job: JobSpec) -> float:
        """The longest one build attempt can take in the runner, every bound spent."""
        te_wait = 0.0
        if job.testenv is not None and not job.timeout_includes_te_wait:
            te_wait = self.te_wait_for(job)
        # Cleanup: the TE's release, the autohold lookup, the nodes' release.
        return (self.node_wait_for(job) + te_wait + job.timeout + self.post_run_for(job)
                + self.artifacts + 3 * self.cleanup)


LIMITS = BuildLimits()


def activity_timeout(job: JobSpec, limits: BuildLimits | None = None) -> timedelta:
    """The build activity's start-to-close timeout: strictly above every internal bound
    (`limits`: the executors', LIMITS unless given).

    Large by design (a week of node waiting by default): the heartbeat timeout, not this,
    notices a dead executor; this only stops a runner that is stuck beyond all its bounds."""
    limits = limits or LIMITS  # looked up at each call: tests shrink LIMITS
    return timedelta(seconds=limits.runner_bound(job) + limits.slack)


class ActivityFailure(NamedTuple):
    """What a build activity that failed without a result means for the job."""

    result: Result
    message: str


def classify_activity_failure(exc: BaseException) -> ActivityFailure:
    """A build activity's failure (cancellation is the caller's business): its start-to-close
    (or schedule-to-close) limit reached means the build timed out, never a rerun; a heartbeat
    timeout means its executor died (the job runs again); anything else is infrastructure too."""
    cause = exc.cause if isinstance(exc, ActivityError) else exc
    kind = cause.type.name if isinstance(cause, TimeoutError) and cause.type else None
    return classify_failure(kind, str(cause or exc))


def classify_failure(timeout_type: str | None, error: str) -> ActivityFailure:
    """The same, from what a detached build's child reported: which limit it hit (a
    TimeoutType name) or None, and the error."""
    if timeout_type in (TimeoutType.START_TO_CLOSE.name, TimeoutType.SCHEDULE_TO_CLOSE.name):
        return ActivityFailure(Result.TIMED_OUT,
                               "timed out: the build did not answer within its limit")
    if timeout_type == TimeoutType.HEARTBEAT.name:
        return ActivityFailure(Result.RETRY, "executor lost: its heartbeats stopped")
    return ActivityFailure(Result.RETRY, f"executor error: {error}")
