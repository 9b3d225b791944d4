"""The gate (Zuul's dependent pipeline): queue state, operator commands, status.

The queue state is carried across continue-as-new, so everything here is plain data.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from lockmaster.model.audit import OperatorNote
from lockmaster.model.base import Model
from lockmaster.model.build import Artifact, JobSpec, KnownFailure, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.check import ReportLabels
from lockmaster.model.gate_compact import compact, expand, is_compact
from lockmaster.model.interned import Interned
from lockmaster.model.report import ReportRequest
from lockmaster.model.state import NeededChange, ProjectState, SpeculativeState
from lockmaster.model.work import StuckView, Work

MergeStatus = Literal["none", "pending", "ok", "conflict"]


class GateBuild(Model):
    """One attempt of one job of one item, on one speculative state."""

    build_id: str
    job: str
    attempt: int
    changes: str  # the speculative state, `N,P N,P` (the item's own change last)
    result: Result | None = None  # None while running
    started: float | None = None
    ended: float | None = None
    log_url: str | None = None
    message: str | None = None
    # What the build produced (a successful one's are handed to the jobs after it and to the
    # items behind: a system test sees the test repositories of every change it tests).
    artifacts: list[Artifact] = Field(default_factory=list)
    known_failures: list[KnownFailure] = Field(default_factory=list)  # for the report's line


class GateItem(Model):
    """A change in the queue, with the buildset for its current speculative state."""

    id: str  # unique per enqueue: names this item's reports (idempotency)
    change: ChangeRef
    pipeline: str
    jobs: list[JobSpec]
    enqueued_at: float
    # Zuul's `item_ahead`-chain, recomputed by the processor: the changes tested together, in
    # merge order, this item's change last. Changes when anything ahead fails or leaves.
    changes: list[ChangeRef] = Field(default_factory=list)
    buildset: int = 0  # bumped on every reset, so late results of old builds are recognised
    merge: MergeStatus = "none"
    merge_error: str | None = None
    state: SpeculativeState | None = None
    builds: list[GateBuild] = Field(default_factory=list)
    job_results: dict[str, Result] = Field(default_factory=dict)
    started_reported: bool = False
    # Set once a final report is being made; the item then leaves the queue.
    outcome: str | None = None
    # Zuul's fail-fast (the project's pipeline setting, frozen at enqueue).
    fail_fast: bool = False
    # Enqueued by an operator: losing an approval does not take it out.
    ignore_requirements: bool = False
    # Who enqueued it and why, when an operator did (forced: without its approvals), and who
    # last promoted it (model/audit.py).
    enqueued_by: OperatorNote | None = None
    promoted_by: OperatorNote | None = None
    # With merge "conflict": the merger said no retry can build this change's state (its
    # patchset or branch is gone...): it leaves at once (pipelines/gate_merges.py).
    unmergeable: bool = False

    @property
    def key(self) -> str:
        return self.change.key


class QueueState(Model):
    queue: str
    pipeline: str
    window: int  # 0: no limit
    window_floor: int
    window_increase_amount: int  # the increase factor (linear: +, exponential: *)
    window_decrease_factor: int
    window_ceiling: int | None = None
    window_increase_type: Literal["linear", "exponential"] = "linear"
    window_decrease_type: Literal["exponential", "linear"] = "exponential"
    items: list[GateItem] = Field(default_factory=list)
    # Changes this queue merged (most recent last, bounded): items whose state includes them need
    # no rebuild when they leave by merging.
    merged_keys: list[str] = Field(default_factory=list)
    # item key -> keys of the changes it needs ahead of it (git parents, Depends-On).
    needs: dict[str, list[str]] = Field(default_factory=dict)
    # Approved changes waiting, unreported, for a dependency to be approved (enqueued) or merged.
    waiting: list[EnqueueRequest] = Field(default_factory=list)
    # Why recent changes left without merging (`N,P` -> "was abandoned", ...), bounded: the
    # report to a change that needed one of them says why it cannot merge.
    left: dict[str, str] = Field(default_factory=dict)
    # Recent trigger events (identity -> event time), bounded: the same event delivered twice
    # (a hook and stream-events) enqueues once; a later re-approval is a new event.
    triggers: dict[str, tuple[float, bool]] = Field(default_factory=dict)
    task_queue_prefix: str = "lockmaster"
    workflow_id_prefix: str = ""
    build_heartbeat_timeout: float = 30.0
    # One merge date for every speculative merge this queue asks for: merging a change onto the
    # same commit then gives the same merge commit in every item's state, so the merger can
    # reuse the merges of the items ahead (0: set when the queue starts).
    merge_date: int = 0
    # Typical duration of each job's successful builds (seconds, exponential average): the
    # estimates `lockmaster status` shows, as Zuul's status page does.
    job_seconds: dict[str, float] = Field(default_factory=dict)
    # What the queue tested for the changes it submitted (most recent last, bounded): the
    # publication of a merged change promotes the gate's package build from here.
    tested: list[GateTested] = Field(default_factory=list)
    # The configured (initial) window, which `window` grows and shrinks from: a reconfiguration
    # tells an edited `window` setting from the live value (None: started before it was kept).
    window_configured: int | None = None


class GateTestedBuild(Model):
    """A successful build of a submitted item that made artifacts (a package build's
    `packages`): what a publication can promote instead of building again."""

    job: str
    build_id: str
    log_url: str | None = None
    artifacts: list[Artifact] = Field(default_factory=list)


class GateTested(Model):
    """What the gate tested for a change it asked the review system to submit. Recorded when the
    submit is asked for, so it is in the queue's state before the review system can announce the
    merge; a submit that is then refused leaves a record that a later one replaces (and which
    only a merged commit with the very same tree could ever use)."""

    change: ChangeRef
    gate_id: str  # the queue's workflow id
    item_id: str
    buildset: int
    changes: str  # the speculative state tested, `N,P N,P` (this change last)
    # The change's project in that state: `head` is the commit the builds tested (the
    # speculative merge commit), reproducible from `base`, `merged` and `merge_date`.
    state: ProjectState
    merge_date: int
    builds: list[GateTestedBuild] = Field(default_factory=list)
    recorded_at: float = 0.0


class GateTestedQuery(Model):
    """Query `tested`: what did this queue test for the change it submitted?"""

    project: str
    number: int


class GateTestedAnswer(Model):
    tested: GateTested | None = None  # the most recent record of that change, if still kept


class GateInput(Model):
    """Input of the gate queue workflow (`<prefix><pipeline>/<queue>`); carried across
    continue-as-new with the queue's state."""

    state: QueueState
    labels: ReportLabels
    require: dict[str, int] = Field(default_factory=dict)
    # The projects sharing this queue: a dependency on a change elsewhere cannot be gated here.
    projects: list[str] = Field(default_factory=list)
    # Continue-as-new after this many history events even if the server does not suggest it
    # (tests force a low threshold); None: only when suggested.
    max_history_events: int | None = None
    precedence: int = 0  # of its node requests (0 high, 1 normal, 2 low)
    # Zuul's dequeue-on-new-patchset: a new patchset takes the old one out of the queue.
    dequeue_on_new_patchset: bool = True
    # A per-branch queue holds the changes of this branch only (None: every branch).
    branch: str | None = None
    # Every project of the layout: a needed change elsewhere is said to be unknown, not foreign.
    layout_projects: list[str] = Field(default_factory=list)
    # Work in flight (merges, builds, reports, submits), by key: the next run takes it up.
    work: dict[str, Work] = Field(default_factory=dict)
    # Enqueue requests still being looked at when the last run continued as new, in order.
    arriving: list[EnqueueRequest] = Field(default_factory=list)
    # A report or submit that keeps failing this long (seconds) shows stuck in `status` and the
    # Web UI; it is tried again until the review system takes it.
    review_round: float = 300.0

    # As JSON (the workflow's input, carried across continue-as-new) the state is written
    # compactly: it would otherwise grow with the square of the queue (model/gate_compact.py).
    @model_serializer(mode="wrap")
    def _write_compact(self, handler: SerializerFunctionWrapHandler,
                       info: SerializationInfo) -> dict[str, Any]:
        data = handler(self)
        return compact(data) if info.mode_is_json() else data

    @model_validator(mode="before")
    @classmethod
    def _read_compact(cls, data: Any) -> Any:
        return expand(data) if is_compact(data) else data


class SubmitRequest(Model):
    change: ChangeRef


class ReportAndSubmitRequest(Model):
    """The success report and the submit in one activity (Zuul's review call with submit):
    the queue's serial path from one merge to the next is one round trip shorter."""

    report: ReportRequest
    submit: SubmitRequest


class SubmitResult(Model):
    ok: bool
    error: str | None = None


class ReportAndSubmitBatchRequest(Model):
    """Several successful items at the head of the queue, each tested on the ones before it plus
    itself: reported and submitted one after the other, stopping at the first refusal."""

    items: list[ReportAndSubmitRequest]


class ReportAndSubmitBatchResult(Model):
    """One result per item attempted, in order; the items after a refusal were not attempted
    (neither reported nor submitted)."""

    results: list[SubmitResult]


class FrozenJobs(Model):
    """A project's job graph in this pipeline, as configured when its change entered."""

    jobs: list[JobSpec] = Field(default_factory=list)
    fail_fast: bool = False


class EnqueueRequest(Interned):
    """Signal `enqueue` (router, operators): put a change at the end of the queue."""

    change: ChangeRef
    pipeline: str
    jobs: list[JobSpec]
    # Keys (`N,P`) of the changes it needs ahead of it (Depends-On, git parents), already in the
    # queue: if one of them fails to merge, this one leaves too.
    needs: list[str] = Field(default_factory=list)
    trigger: str = ""
    trigger_at: float | None = None  # when the event happened (duplicate deliveries)
    trigger_exact: bool = False  # trigger_at is the review system's time, not a receipt time
    fail_fast: bool = False
    # An operator's enqueue: the pipeline's requirements (approvals) are not checked.
    ignore_requirements: bool = False
    # The operator who asked, and why (`lockmaster gate enqueue`; None: an event's enqueue).
    by: str | None = None
    reason: str | None = None
    # The job graphs of the queue's other projects: a needed change of one of them that is
    # approved enters with this one (Zuul enqueues the changes ahead in the same event).
    other_projects: dict[str, FrozenJobs] = Field(default_factory=dict)
    # While waiting: every change it needs that is neither merged nor in the queue yet.
    needed: list[NeededChange] = Field(default_factory=list)


class DequeueRequest(Model):
    """Signal `dequeue`: remove a change (its builds are cancelled, nothing merges)."""

    project: str
    number: int
    reason: str = "dequeued by an operator"
    report: bool = True
    # The operator who dequeued it (`reason`: why): said in the queue's state and in the
    # report to the change (None: an older starter's request).
    by: str | None = None


class PromoteRequest(Model):
    """Signal `promote`: move these changes, in this order, to the head of the queue."""

    changes: list[str]  # `NUMBER,PATCHSET` or `NUMBER`
    by: str | None = None  # the operator who promoted them, and why
    reason: str | None = None


class CommandResult(Model):
    """What an operator's `dequeue` or `promote` update did (updates of the same names as the
    signals: a command that would change nothing is rejected, with the reason)."""

    message: str
    dequeued: list[str] = Field(default_factory=list)  # `N,P` of the items that left
    order: list[str] = Field(default_factory=list)  # the queue's items after it, head first


class ChangeUpdated(Model):
    """Signal `change-updated`: approvals removed, abandoned, new patchset: re-check it."""

    project: str
    number: int
    patchset: int | None = None
    status: Literal["NEW", "MERGED", "ABANDONED"] = "NEW"
    approvals: dict[str, int] = Field(default_factory=dict)
    wip: bool = False
    private: bool = False


class StatusQuery(Model):
    """No arguments."""


class JobView(Model):
    name: str
    voting: bool
    state: str  # waiting, queued, running, or a final result
    attempt: int = 0
    log_url: str | None = None
    elapsed: float | None = None  # at the workflow's last task (its clock stands between tasks)
    estimated: float | None = None
    # When the running attempt started (epoch seconds): elapsed by the wall clock (status page).
    started: float | None = None
    # Why it did not succeed (the last attempt's message, or why it was skipped).
    reason: str | None = None


class ItemView(Model):
    change: str  # `NUMBER,PATCHSET`
    project: str
    branch: str
    active: bool  # within the window
    failing: bool
    changes: str  # its speculative state
    merge: MergeStatus
    enqueued_at: float
    jobs: list[JobView] = Field(default_factory=list)
    merge_error: str | None = None  # with merge "conflict": what the merger said
    # Who enqueued (forced: without its approvals) and promoted it, and why, when an operator
    # did.
    enqueued_by: OperatorNote | None = None
    promoted_by: OperatorNote | None = None

    def operator_lines(self) -> list[str]:
        """e.g. ["enqueued by alice without its approvals: R", "promoted by bob"]."""
        return [note.describe(action) for action, note in
                (("enqueued", self.enqueued_by), ("promoted", self.promoted_by)) if note]


class QueueStatus(Model):
    queue: str
    pipeline: str
    window: int
    idle: bool  # no items and nothing in flight
    # Merges, builds, reports or commands in flight (items may wait for dependencies unseen).
    busy: bool = False
    items: list[ItemView] = Field(default_factory=list)
    # The last changes that left without merging (`N,P` -> why) and that merged, oldest first.
    recently_left: dict[str, str] = Field(default_factory=dict)
    recently_merged: list[str] = Field(default_factory=list)
    # Reports and submits that keep failing (the review system is down): retried until it is
    # back, shown here meanwhile.
    stuck: list[StuckView] = Field(default_factory=list)


class QueueReconfigure(Model):
    """Signal `reconfigure`: a running queue takes the configuration's settings now, as Zuul does
    on a reconfiguration (pipelines/gate_reconfigure.py): the GateInput fields that come from the
    configuration, and the window settings of its QueueState (the same names). Items in flight
    keep their frozen job graphs. `queue` and `pipeline` name the queue it is meant for: a
    queue given another's settings changes nothing."""

    queue: str
    pipeline: str
    labels: ReportLabels
    require: dict[str, int] = Field(default_factory=dict)
    projects: list[str] = Field(default_factory=list)
    precedence: int = 0
    dequeue_on_new_patchset: bool = True
    branch: str | None = None
    layout_projects: list[str] = Field(default_factory=list)
    window: int
    window_floor: int
    window_increase_amount: int
    window_decrease_factor: int
    window_ceiling: int | None = None
    window_increase_type: Literal["linear", "exponential"] = "linear"
    window_decrease_type: Literal["exponential", "linear"] = "exponential"


QueueState.model_rebuild()
GateInput.model_rebuild()
