"""What lockmaster asks of a review system, whatever it is (Gerrit, local)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from lockmaster.model.change import ChangeInfo, ChangeRef
from lockmaster.model.report import ReportRequest, ReportResult


class ReviewError(Exception):
    """The review system failed in a way worth retrying (network, 5xx)."""


class ChangeNotFound(ReviewError):
    """No such change (a 404): not worth retrying."""


class SubmitRefused(ReviewError):
    """The review system would not merge the change (gate: merge-failure)."""


@runtime_checkable
class ReviewDriver(Protocol):
    connection: str

    async def get_change(self, number: int) -> ChangeInfo:
        """The change's current patchset, status, commit message and approvals."""
        ...

    async def find_change_id(self, change_id: str) -> list[ChangeInfo]:
        """Changes carrying this Change-Id (one per branch it was proposed to)."""
        ...

    async def needed_by(self, change: ChangeInfo) -> list[ChangeInfo]:
        """Open changes that may need `change`: git children of its current patchset (on this
        connection) and changes whose `Depends-On:` names it (by URL, or by Change-Id on the
        same connection). A superset is fine: the caller resolves each candidate's
        dependencies before acting on it."""
        ...

    async def post_report(self, report: ReportRequest) -> ReportResult:
        """Post a review message with labels on the report's patchset.

        Idempotent: when a message tagged with `report.tag` is already on the change, nothing is
        posted and `posted` is False (a retried activity must not vote twice).
        """
        ...

    async def submit(self, change: ChangeRef) -> None:
        """Merge the change (raises SubmitRefused when the review system says no)."""
        ...

    def git_url(self, project: str) -> str:
        """Where `git fetch` gets the project's branches and refs/changes/*."""
        ...

    def change_url(self, number: int) -> str:
        """The change's web URL (used in Depends-On footers and reports)."""
        ...

    async def aclose(self) -> None: ...
