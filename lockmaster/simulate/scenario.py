"""The scenario file of `lockmaster simulate` (spec/scenarios.md), as pydantic models.

    changes:   {A: {project: org/project}, ...}      numbered 1, 2, 3... in file order
    events:    [upload: A, {approve: A, at: 1.5}, settle, ...]
    outcomes:  [{job: project-test1, change: A, result: FAILURE}, {submit: B, result: refused}]
    durations: {default: 1.0, project-merge: 0.5}

`lockmaster.simulate.loading.load_scenario` validates a file (these models, then the cross
references of `references.py` and the layout): every problem names the file, the key path and
the line.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    model_validator,
)

from lockmaster.config.models import ConfigModel


def _seconds(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"expected seconds, a number >= 0 (got {value!r})")
    return float(value)


Seconds = Annotated[float, BeforeValidator(_seconds)]


# --- changes ---------------------------------------------------------------------------------


class ChangeSpec(ConfigModel):
    project: str
    branch: str = "master"
    # Files of patchset 1 (path -> text); default: one new file unique to the change.
    files: dict[str, str] | None = None
    parent: str | None = None  # git parent: on top of that change's current patchset
    depends_on: list[str] = Field(default_factory=list)  # Depends-On: footers
    merged: bool = False  # merged before the scenario starts
    wip: bool = False  # work in progress from the start
    private: bool = False  # private from the start


# --- events ----------------------------------------------------------------------------------


class EventBase(ConfigModel):
    kind: ClassVar[str]
    at: Seconds | None = None  # seconds since the scenario started; None: once settled

    def change_names(self) -> list[str]:
        """The changes this event names, in order."""
        value = getattr(self, self.kind.replace("-", "_"), None)
        if isinstance(value, list):
            return list(value)
        return [value] if isinstance(value, str) else []

    @property
    def change(self) -> str:
        names = self.change_names()
        assert len(names) == 1, f"{self.kind} names {len(names)} changes"
        return names[0]


class UploadEvent(EventBase):
    kind = "upload"
    upload: str


class NewPatchsetEvent(EventBase):
    kind = "new-patchset"
    new_patchset: str
    files: dict[str, str] | None = None  # default: the change's own file, rewritten


class ApproveEvent(EventBase):
    kind = "approve"
    approve: str
    silent: bool = False  # vote without sending comment-added
    # The labels to set instead of Code-Review +2 and Workflow +1.
    labels: dict[str, int] | None = None


class UnapproveEvent(EventBase):
    kind = "unapprove"
    unapprove: str


class CommentEvent(EventBase):
    kind = "comment"
    comment: str
    text: str


class AbandonEvent(EventBase):
    kind = "abandon"
    abandon: str


class MergeEvent(EventBase):
    kind = "merge"
    merge: str


class RestoreEvent(EventBase):
    kind = "restore"
    restore: str


class DeleteVoteEvent(EventBase):
    kind = "delete-vote"
    delete_vote: str
    label: str = "Workflow"


class SetWipEvent(EventBase):
    kind = "set-wip"
    set_wip: str


class UnsetWipEvent(EventBase):
    kind = "unset-wip"
    unset_wip: str


class SetPrivateEvent(EventBase):
    kind = "set-private"
    set_private: str


class UnsetPrivateEvent(EventBase):
    kind = "unset-private"
    unset_private: str


class RedeliverEvent(EventBase):
    """The review event that events[N] sent, delivered again unchanged (the same event from a
    hook and from stream-events): a true duplicate."""

    kind = "redeliver"
    redeliver: int = Field(ge=0)

    def change_names(self) -> list[str]:
        return []


class EnqueueEvent(EventBase):
    kind = "enqueue"
    enqueue: str
    pipeline: str | None = None  # default: the layout's only dependent pipeline


class DequeueEvent(EventBase):
    kind = "dequeue"
    dequeue: str
    pipeline: str | None = None


class PromoteEvent(EventBase):
    kind = "promote"
    promote: list[str] = Field(min_length=1)
    pipeline: str | None = None
    queue: str | None = None  # default: the queue of the promoted changes' projects


class SettleEvent(EventBase):
    kind = "settle"
    settle: None = None

    @model_validator(mode="before")
    @classmethod
    def _word(cls, value: Any) -> Any:
        return {"settle": None} if value == "settle" else value


EVENT_TYPES: dict[str, type[EventBase]] = {
    cls.kind: cls
    for cls in (UploadEvent, NewPatchsetEvent, ApproveEvent, UnapproveEvent, CommentEvent,
                AbandonEvent, MergeEvent, RestoreEvent, DeleteVoteEvent, SetWipEvent,
                UnsetWipEvent, SetPrivateEvent, UnsetPrivateEvent, RedeliverEvent, EnqueueEvent,
                DequeueEvent, PromoteEvent, SettleEvent)
}
OPERATOR_EVENTS = ("enqueue", "dequeue", "promote")


def event_kind(value: Any) -> str | None:
    """Which kind of event an entry is: the one key of it that names a kind."""
    if isinstance(value, EventBase):
        return value.kind
    if value == "settle":
        return "settle"
    if isinstance(value, dict):
        kinds = [key for key in value if key in EVENT_TYPES]
        return kinds[0] if len(kinds) == 1 else None
    return None


Event = Annotated[
    Annotated[UploadEvent, Tag("upload")]
    | Annotated[NewPatchsetEvent, Tag("new-patchset")]
    | Annotated[ApproveEvent, Tag("approve")]
    | Annotated[UnapproveEvent, Tag("unapprove")]
    | Annotated[CommentEvent, Tag("comment")]
    | Annotated[AbandonEvent, Tag("abandon")]
    | Annotated[MergeEvent, Tag("merge")]
    | Annotated[RestoreEvent, Tag("restore")]
    | Annotated[DeleteVoteEvent, Tag("delete-vote")]
    | Annotated[SetWipEvent, Tag("set-wip")]
    | Annotated[UnsetWipEvent, Tag("unset-wip")]
    | Annotated[SetPrivateEvent, Tag("set-private")]
    | Annotated[UnsetPrivateEvent, Tag("unset-private")]
    | Annotated[RedeliverEvent, Tag("redeliver")]
    | Annotated[EnqueueEvent, Tag("enqueue")]
    | Annotated[DequeueEvent, Tag("dequeue")]
    | Annotated[PromoteEvent, Tag("promote")]
    | Annotated[SettleEvent, Tag("settle")],
    Discriminator(event_kind, custom_error_type="event_kind",
                  custom_error_message="not an event"),
]


# --- outcomes --------------------------------------------------------------------------------

ScriptedResult = Literal["SUCCESS", "FAILURE", "NODE_FAILURE", "TIMED_OUT", "RETRY"]


class JobOutcome(ConfigModel):
    """Every build of `job` whose speculative state contains `change` returns `result`."""

    job: str
    change: str
    result: ScriptedResult
    # Narrower matches (not in the spec's minimum): only in this pipeline, on this patchset of
    # `change`, on this attempt.
    pipeline: str | None = None
    patchset: int | None = Field(None, ge=1)
    attempt: int | None = Field(None, ge=1)


class SubmitOutcome(ConfigModel):
    """The review system refuses to merge `submit` when the gate asks."""

    submit: str
    result: Literal["refused"]


def outcome_kind(value: Any) -> str | None:
    if isinstance(value, JobOutcome | SubmitOutcome):
        return "submit" if isinstance(value, SubmitOutcome) else "job"
    if isinstance(value, dict):
        if "submit" in value and "job" not in value:
            return "submit"
        if "job" in value and "submit" not in value:
            return "job"
    return None


Outcome = Annotated[
    Annotated[JobOutcome, Tag("job")] | Annotated[SubmitOutcome, Tag("submit")],
    Discriminator(outcome_kind, custom_error_type="outcome_kind",
                  custom_error_message="not an outcome"),
]


# --- the file --------------------------------------------------------------------------------


class Layout(ConfigModel):
    """The pipelines/projects/jobs part of lockmaster.yaml (validated as LockmasterConfig)."""

    pipelines: list[Any] = Field(default_factory=list)
    queues: list[Any] = Field(default_factory=list)
    projects: list[Any] = Field(default_factory=list)
    jobs: list[Any] = Field(default_factory=list)


DEFAULT_DURATION = 1.0


class Scenario(ConfigModel):
    name: str | None = None
    layout: Layout | None = None  # None: the default layout
    changes: dict[str, ChangeSpec] = Field(default_factory=dict)
    events: list[Event] = Field(default_factory=list)
    outcomes: list[Outcome] = Field(default_factory=list)
    durations: dict[str, Seconds] = Field(default_factory=dict)
    # Projects the simulated Gerrit has but the layout does not (lockmaster does not know them):
    # a change may be in one, e.g. to name it in another change's Depends-On.
    unmanaged_projects: list[str] = Field(default_factory=list)
    # What the report should show (tests/scenario_expect.py reads it); simulate ignores it.
    expect: dict[str, Any] | None = None

    # Set by the loader: the file it came from.
    _source: str | None = PrivateAttr(default=None)

    @property
    def source(self) -> str | None:
        return self._source

    def title(self) -> str:
        if self.name:
            return self.name
        if self._source:
            return self._source.rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml")
        return "scenario"

    def numbers(self) -> dict[str, int]:
        """Change numbers: 1, 2, 3... in the order the changes are listed."""
        return {name: index + 1 for index, name in enumerate(self.changes)}

    def duration(self, job: str) -> float:
        return self.durations.get(job, self.durations.get("default", DEFAULT_DURATION))

    def job_outcomes(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if isinstance(o, JobOutcome)]

    def refused_submits(self) -> set[str]:
        return {o.submit for o in self.outcomes if isinstance(o, SubmitOutcome)}
