"""Publishing after merge: one workflow per merged change (`publish/<project>/<change>`) promotes
the gate's package build when the gate tested the merged commit's tree (else rebuilds from the
merged commit), publishes it into the stable repository when its turn comes (the publish queue,
`publish-queue/<repository>`, hands out turns in merge order) and syncs every mirror."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from lockmaster.model.base import Model
from lockmaster.model.build import BuildResult, JobSpec
from lockmaster.model.change import ChangeRef

STABLE = "stable"  # the one stable repository (per format: deb/, rpm/ under the publish root)


class StepState(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class PublishStep(Model):
    """One step of a change's publication, as `lockmaster publish show` lists it."""

    name: str  # "build", "publish", "sync:<mirror>"
    state: StepState = StepState.WAITING
    detail: str | None = None
    started: float | None = None
    ended: float | None = None
    attempts: int = 0
    url: str | None = None  # the build's log, the mirror's sync report
    # publish: package files new in the stable repository; sync: files the mirror got / lost.
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    # Shown from the run before a retrigger: this run does not do the step again.
    earlier: bool = False


class BuildSource(StrEnum):
    GATE = "gate"  # the gate's build, promoted: it tested the merged commit's tree
    REBUILD = "rebuild"  # built again from the merged commit


class Provenance(Model):
    """Which build a publication published, and why that one."""

    source: BuildSource
    # Why: "trees equal: <tree>", "trees differ: ... vs ...", "no gate build found: ...".
    reason: str
    job: str
    build_id: str | None = None
    # The gate's: "<gate workflow> item <id> buildset <n> (<N,P N,P>)"; a rebuild's: the
    # publication's own workflow.
    buildset: str | None = None
    log_url: str | None = None
    packages_url: str | None = None
    # sha256 of the build's manifest.json when it was chosen: the publisher takes exactly it.
    manifest_sha256: str | None = None
    tested_commit: str | None = None  # the commit the build built (and, in the gate, tested)
    tested_tree: str | None = None
    merged_commit: str
    merged_tree: str | None = None
    # What the publishing host checked before publishing it (its own words).
    publisher_check: str | None = None


class FindGateBuildRequest(Model):
    """Look for the gate's build of the publish build job for this merged change."""

    change: ChangeRef  # `commit`: the merged commit
    job: str  # the project's package build job
    gate_ids: list[str]  # the queues that may have gated it


class GateBuildChoice(Model):
    """`promote`: publish the gate's build (its provenance says which and why); otherwise the
    provenance says why not, and the publication rebuilds."""

    promote: bool
    provenance: Provenance


class PublishInput(Model):
    change: ChangeRef  # `commit` is the merged commit
    job: JobSpec  # the project's package build job, frozen when the merge arrived
    queue_id: str  # the publish queue that hands out turns
    mirrors: list[str] = Field(default_factory=list)
    task_queue_prefix: str = "lockmaster"
    build_heartbeat_timeout: float = 30.0
    sync_heartbeat_timeout: float = 60.0
    # Retriggering a single step of a change already published: "build", "publish" or
    # "sync:<mirror>"; None runs everything.
    only: str | None = None
    snapshot: str | None = None  # with `only`: the snapshot the change was published in
    packages_url: str | None = None  # with `only` = "publish": the build's packages artifact
    # With `only`: the steps of the run before, so `publish show` keeps every row.
    earlier_steps: list[PublishStep] = Field(default_factory=list)
    # The gate queues that may have tested and submitted the change (their builds are promoted
    # when they tested the merged tree).
    gate_ids: list[str] = Field(default_factory=list)
    # With `only`: which build the run before published (a promoted one is checked as such).
    provenance: Provenance | None = None


class PublishResult(Model):
    ok: bool
    snapshot: str | None = None
    steps: list[PublishStep] = Field(default_factory=list)
    message: str = ""


class PublishStatusQuery(Model):
    pass


class PublishStatus(Model):
    change: ChangeRef
    steps: list[PublishStep]
    snapshot: str | None = None
    build: BuildResult | None = None
    packages_url: str | None = None  # what was (or will be) published: the build's artifact
    done: bool = False
    provenance: Provenance | None = None  # which build, and why that one


class RetriggerRequest(Model):
    step: str  # "build", "publish" or "sync:<mirror>"


class RetriggerAnswer(Model):
    ok: bool
    message: str
    workflow_id: str | None = None


# --- the publish queue ------------------------------------------------------------------------


class QueueState(StrEnum):
    BUILDING = "building"  # its package is being rebuilt (or the gate's build looked up)
    READY = "ready"  # built: waiting for its turn
    PUBLISHING = "publishing"  # its turn: adding to the stable repository
    DONE = "done"
    FAILED = "failed"


class QueueEntry(Model):
    workflow_id: str
    change: str  # "<project> <number>,<patchset>", for people
    state: QueueState = QueueState.BUILDING
    sequence: int = 0  # the order merges arrived in
    snapshot: str | None = None
    detail: str | None = None
    # The change's workflow received its turn (a run that continued as new before sends it
    # again: receiving it twice is harmless).
    turn_delivered: bool = False


class Enqueue(Model):
    workflow_id: str
    change: str


class Ready(Model):
    workflow_id: str


class Finished(Model):
    workflow_id: str
    ok: bool
    snapshot: str | None = None
    detail: str | None = None


class Turn(Model):
    """The queue to a change's workflow: publish now, as this snapshot."""

    snapshot: str


class QueueInput(Model):
    repository: str = STABLE
    entries: list[QueueEntry] = Field(default_factory=list)
    next_sequence: int = 1
    max_history_events: int | None = None  # tests force continue-as-new with a low limit
    keep_done: int = 50  # finished entries kept for `status`


class QueueStatusQuery(Model):
    pass


class QueueStatus(Model):
    repository: str
    entries: list[QueueEntry]


class SkipRequest(Model):
    workflow_id: str
    by: str | None = None  # the operator, and why (model/audit.py)
    reason: str | None = None


# --- activities on the publishing host ---------------------------------------------------------


class PublishStableRequest(Model):
    change: ChangeRef  # `commit`: the merged commit the packages must come from
    snapshot: str  # the new snapshot's id (from the queue: merge order)
    packages_url: str  # the build's `packages` artifact (manifest.json and the files)
    # Which build it is: the gate's (built from the speculative merge commit, accepted only when
    # that commit's tree is the merged commit's) or a rebuild (built from a commit on the branch).
    provenance: Provenance | None = None


class PublishStableResult(Model):
    snapshot: str
    formats: list[str] = Field(default_factory=list)
    added: list[str] = Field(default_factory=list)  # package files new in the stable repository
    detail: str = ""
    provenance: str = ""  # what the publishing host checked of the packages' origin


class SyncMirrorRequest(Model):
    mirror: str
    snapshot: str  # at least this snapshot (a newer one holds this change's packages too)


class SyncMirrorResult(Model):
    mirror: str
    snapshot: str  # what the mirror serves now
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    skipped: bool = False  # the mirror already served this snapshot or a newer one
    report_url: str | None = None
    detail: str = ""
