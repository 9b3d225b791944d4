"""What the workflows hand to the results database (lockmaster/results, activities/results.py):
one record per finished build and per reported buildset. Plain data, built in workflows from
what they already hold; the activity writes each record once (its uuid is the key)."""

from __future__ import annotations

from pydantic import Field

from lockmaster.model.base import Model
from lockmaster.model.build import BuildResult, KnownFailure
from lockmaster.model.change import ChangeRef


class ChangeAhead(Model):
    """One change of the speculative state a build tested (the build's own change last)."""

    connection: str
    project: str | None = None  # None: no longer known when the build was recorded
    number: int
    patchset: int


def changes_ahead(changes: list[ChangeRef]) -> list[ChangeAhead]:
    return [ChangeAhead(connection=c.connection, project=c.project, number=c.number,
                        patchset=c.patchset) for c in changes]


class BuildRecord(Model):
    """One attempt of one job, finished (any result, ABORTED and CANCELED included)."""

    uuid: str  # the build id: the idempotency key
    buildset_uuid: str
    # The gate: which of the item's buildsets (0, then +1 per reset); the check: 0.
    buildset_try: int = 0
    pipeline: str
    queue: str | None = None  # the gate's shared queue
    change: ChangeRef
    job: str
    result: str  # a Result, or CANCELED (cancelled before it reported)
    attempt: int = 1
    voting: bool = True
    started: float | None = None  # epoch seconds
    ended: float | None = None
    node_provider: str | None = None
    node_label: str | None = None
    node_name: str | None = None
    log_url: str | None = None
    message: str | None = None
    changes: list[ChangeAhead] = Field(default_factory=list)  # the speculative state
    # Its `N,P N,P` spelling as the build was asked for (the gate's), when `changes` may be
    # incomplete; default: made from `changes`.
    changes_key: str | None = None
    known_failures: list[KnownFailure] = Field(default_factory=list)

    @classmethod
    def of(cls, build: BuildResult, *, buildset_uuid: str, pipeline: str, change: ChangeRef,
           voting: bool = True, queue: str | None = None, buildset_try: int = 0,
           changes: list[ChangeRef] | None = None,
           changes_key: str | None = None) -> BuildRecord:
        node = build.node
        return cls(
            uuid=build.build_id, buildset_uuid=buildset_uuid, buildset_try=buildset_try,
            pipeline=pipeline, queue=queue, change=change, job=build.job,
            result=build.result.value, attempt=build.attempt, voting=voting,
            started=build.started, ended=build.ended,
            node_provider=node.provider if node else None,
            node_label=node.label if node else None, node_name=node.name if node else None,
            log_url=build.log_url, message=build.message,
            changes=changes_ahead(changes or []), changes_key=changes_key,
            known_failures=list(build.known_failures))


# Every result a buildset is recorded with: a check run's outcome (as its `Result` search
# attribute), a check run cancelled or restarted on a dependency's new patchset, and a gate
# item's final report (workflows/gate_recording.FINAL_REPORTS).
BUILDSET_RESULTS = ("SUCCESS", "FAILURE", "MERGE_CONFLICT", "MERGE_FAILURE", "CONFIG_ERROR",
                    "NO_JOBS", "NOT_ENQUEUED", "ERROR", "CANCELLED", "RESTARTED", "DEQUEUED")


class BuildsetRecord(Model):
    """A buildset as reported: a check run, or a gate item (its final outcome)."""

    uuid: str
    pipeline: str
    queue: str | None = None
    change: ChangeRef
    result: str  # SUCCESS, FAILURE, MERGE_CONFLICT, CANCELLED, DEQUEUED, ...
    message: str | None = None  # the report
    reason: str | None = None  # one line: why it did not succeed
    started: float | None = None
    ended: float | None = None
    changes: list[ChangeAhead] = Field(default_factory=list)
    # A failed gate item: the builds restarted behind it (0 when not counted).
    restarted_behind: int = 0


class RecordBuildsRequest(Model):
    builds: list[BuildRecord]
    # Buildsets recorded in the same activity, after the builds (the gate's batches).
    buildsets: list[BuildsetRecord] = Field(default_factory=list)


class RecordBuildsetRequest(Model):
    buildset: BuildsetRecord


class RecordResult(Model):
    recorded: int = 0  # rows written now
    already: int = 0  # rows that were there (a retried activity)
    # Set when nothing could be written because no results database is configured.
    disabled: str | None = None
