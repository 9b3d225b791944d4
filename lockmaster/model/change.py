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
    # Label values present with the event (comment-added carries them), e.g. {"Code-Review": 2}.
    approvals: dict[str, int] = Field(default_factory=dict)
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

    def identity(self) -> str:
        """What makes two deliveries the same event (hook and stream carry different extras)."""
        parts = [self.type, self.connection, self.project, str(self.change), str(self.patchset)]
        if self.type == "comment-added":
            parts.append((self.comment or "").strip())
            parts.append(self.author or "")
        if self.type == "ref-updated":
            parts += [self.refname or "", self.newrev or ""]
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
