"""Changes, patchsets and the review events that concern them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lockmaster.model.base import Model

EventType = Literal[
    "patchset-created",
    "comment-added",
    "change-merged",
    "change-abandoned",
    "ref-updated",
    # Events that change whether a change may be gated (Zuul evaluates each one afresh).
    "vote-deleted",
    "change-restored",
    "wip-state-changed",
    "private-state-changed",
]


def change_ref_name(number: int, patchset: int) -> str:
    """Gerrit's ref for a patchset: refs/changes/<last two digits>/<number>/<patchset>."""
    return f"refs/changes/{number % 100:02d}/{number}/{patchset}"


class ChangeRef(Model):
    """One patchset of one change, as a review connection knows it."""

    connection: str
    project: str
    branch: str
    number: int
    patchset: int
    commit: str | None = None
    change_id: str | None = None
    url: str | None = None

    @property
    def ref(self) -> str:
        return change_ref_name(self.number, self.patchset)

    @property
    def key(self) -> str:
        """Zuul's `NUMBER,PATCHSET` spelling."""
        return f"{self.number},{self.patchset}"


class ReviewEvent(Model):
    """A review-system event, from a Gerrit hook, stream-events or the local connection."""

    type: EventType
    connection: str
    project: str
    branch: str | None = None
    change: int | None = None
    patchset: int | None = None
    commit: str | None = None
    change_id: str | None = None
    url: str | None = None
    comment: str | None = None
    author: str | None = None
    # Label values present with the event (comment-added carries them), e.g. {"Code-Review": 2};
    # vote-deleted: the removed label at its new value (0), possibly beside the reviewer's other,
    # untouched votes; old_approvals holds only the removed labels, at the values they had.
    approvals: dict[str, int] = Field(default_factory=dict)
    old_approvals: dict[str, int] = Field(default_factory=dict)
    # wip-state-changed / private-state-changed: the change's new state.
    wip: bool | None = None
    private: bool | None = None
    # ref-updated only.
    refname: str | None = None
    oldrev: str | None = None
    newrev: str | None = None
    # When the review system created the event (seconds since the epoch), if it says.
    created: float | None = None

    def change_ref(self) -> ChangeRef:
        if self.change is None or self.patchset is None or self.branch is None:
            raise ValueError(f"{self.type} event names no change/patchset")
        return ChangeRef(
            connection=self.connection,
            project=self.project,
            branch=self.branch,
            number=self.change,
            patchset=self.patchset,
            commit=self.commit,
            change_id=self.change_id,
            url=self.url,
        )

    def at(self) -> float | None:
        """When the review system created the event, if it says (hooks do not)."""
        return self.created

    def identity(self) -> str:
        """What makes two deliveries the same event (hook and stream carry different extras)."""
        parts = [self.type, self.connection, self.project, str(self.change), str(self.patchset)]
        if self.type == "comment-added":
            parts.append((self.comment or "").strip())
            parts.append(self.author or "")
        if self.type == "ref-updated":
            parts += [self.refname or "", self.newrev or ""]
        # Removing Code-Review then Workflow, or WIP on then off, are different events.
        if self.type == "vote-deleted":
            parts += [",".join(sorted(self.old_approvals)), self.author or ""]
        if self.type == "wip-state-changed":
            parts.append(str(self.wip))
        if self.type == "private-state-changed":
            parts.append(str(self.private))
        return "|".join(parts)


class ChangeInfo(Model):
    """What a review connection answers about a change (current patchset, status, labels)."""

    connection: str
    project: str
    branch: str
    number: int
    patchset: int
    status: Literal["NEW", "MERGED", "ABANDONED"]
    commit: str
    change_id: str | None = None
    url: str | None = None
    message: str = ""
    # Highest current value per label, e.g. {"Code-Review": 2, "Workflow": 1}.
    approvals: dict[str, int] = Field(default_factory=dict)
    # Work in progress / private (Gerrit's work_in_progress, is_private): not to be gated.
    wip: bool = False
    private: bool = False
    # Commit -> patchset number of the revisions the answer listed (at least the current one
    # when known; all of them from a Change-Id lookup): which patchset a child is built on.
    revisions: dict[str, int] = Field(default_factory=dict)

    def ref(self) -> ChangeRef:
        return ChangeRef(
            connection=self.connection,
            project=self.project,
            branch=self.branch,
            number=self.number,
            patchset=self.patchset,
            commit=self.commit,
            change_id=self.change_id,
            url=self.url,
        )
