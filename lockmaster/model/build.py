"""Jobs, builds and their results."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from lockmaster.model.base import Model
from lockmaster.model.change import ChangeRef
from lockmaster.model.interned import Interned
from lockmaster.model.state import SpeculativeState


class Result(StrEnum):
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    ABORTED = "ABORTED"
    NODE_FAILURE = "NODE_FAILURE"
    TIMED_OUT = "TIMED_OUT"
    RETRY = "RETRY"
    RETRY_LIMIT = "RETRY_LIMIT"
    SKIPPED = "SKIPPED"
    ERROR = "ERROR"

    @property
    def retryable(self) -> bool:
        """Infrastructure failures that use up an attempt and run the job again."""
        return self is Result.RETRY


class JobSpec(Model):
    """A job as it will run: the configuration resolved for one project and pipeline."""

    name: str
    run: str
    pre_run: list[str] = Field(default_factory=list)
    post_run: list[str] = Field(default_factory=list)
    # One label per node; the first node is where the commands run.
    nodeset: list[str] = Field(default_factory=lambda: ["local"])
    timeout: float = 1800.0  # workspace preparation, pre-run and run (Zuul's job timeout)
    # Waiting for nodes and for a TE is not part of `timeout` (as in Zuul): each has its own
    # bound, None for the executor's backstop (execution/build_limits.py).
    node_wait_timeout: float | None = None
    te_wait_timeout: float | None = None
    timeout_includes_te_wait: bool = False  # the TE wait counts against `timeout` too
    attempts: int = 3
    voting: bool = True
    dependencies: list[str] = Field(default_factory=list)
    aborted_by: list[str] = Field(default_factory=list)  # jobs whose failure stops this one
    required_projects: list[str] = Field(default_factory=list)
    vars: dict[str, str] = Field(default_factory=dict)
    # Variable -> secret name: the executor reads the value (execution/secrets.py); a
    # history shows the name only.
    secret_vars: dict[str, str] = Field(default_factory=dict)
    testenv: str | None = None  # a TE label: leased for the job, described in $TE_DATAFILE
    # Gate: the items behind do not start builds until this job succeeded (Zuul's option).
    hold_following_changes: bool = False
    # Zuul's provides/requires (dependent pipelines: waits for the providers ahead).
    provides: list[str] = Field(default_factory=list)
    requires: list[str] = Field(default_factory=list)


class NodeInfo(Model):
    """A node a build ran on, as reported (never carries secrets)."""

    provider: str
    name: str
    label: str
    host: str | None = None
    held_until: float | None = None  # kept for debugging (autohold) until then


class Artifact(Model):
    """Something a build produced for later jobs and for users: a file or a directory tree
    (e.g. a per-change package repository) served under the build's log URL."""

    name: str
    url: str  # a directory's URL ends with "/"
    job: str
    project: str
    change: int
    patchset: int
    metadata: dict[str, str] = Field(default_factory=dict)


def node_holder(pipeline: str, change_key: str, job: str) -> str:
    """Who a build's node request is for, as the pools show it ("gate 12,3 unit"); the status
    page finds a waiting job's place in the pool's queue by it."""
    return f"{pipeline} {change_key} {job}"


def te_holder(pipeline: str, project: str, change_key: str, job: str) -> str:
    """Who a build's TE lease is for, as the brokers show it ("gate org/p 12,3 devtest")."""
    return f"{pipeline} {project} {change_key} {job}"


class BuildRequest(Interned):
    """Everything an executor needs to run one attempt of one job (its JSON names each change
    of the state once: model/interned.py)."""

    build_id: str
    pipeline: str
    change: ChangeRef
    job: JobSpec
    state: SpeculativeState
    attempt: int = 1
    # Node requests are served by precedence (0 gate, 1 check, 2 post), then queue position.
    precedence: int = 1
    position: int = 0
    # Where the log goes, relative to the log storage root; the executor appends as lines arrive.
    log_path: str
    # Artifacts this build receives (of the jobs it depends on, of the changes ahead in the
    # gate): the workflow chooses them; the executor hands them to the job as
    # $LOCKMASTER_ARTIFACTS_FILE.
    artifacts: list[Artifact] = Field(default_factory=list)


class KnownFailure(Model):
    """A known-failure signature that matched a build's logs (elastic-recheck's idea): its name
    (the YAML file's stem) and the bug it is filed as."""

    signature: str
    bug: str  # the bug's URL


class BuildResult(Model):
    build_id: str
    job: str
    result: Result
    attempt: int = 1
    log_url: str | None = None
    started: float | None = None  # epoch seconds
    ended: float | None = None
    node: NodeInfo | None = None
    message: str | None = None  # one line of detail for operators (why NODE_FAILURE, ...)
    artifacts: list[Artifact] = Field(default_factory=list)  # what the build produced
    # Signatures that matched its logs (any result: a match on a success flags a signature as
    # too broad); a failed build's report names their bugs.
    known_failures: list[KnownFailure] = Field(default_factory=list)

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started
