"""Activities that talk to review systems (Gerrit, local): reports, change lookups, submits."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from lockmaster.model.change import ChangeInfo
from lockmaster.model.gate import (
    ReportAndSubmitBatchRequest,
    ReportAndSubmitBatchResult,
    ReportAndSubmitRequest,
    SubmitRequest,
    SubmitResult,
)
from lockmaster.model.report import ReportRequest, ReportResult
from lockmaster.review.base import ChangeNotFound, ReviewDriver, SubmitRefused


class ReviewActivities:
    def __init__(self, drivers: dict[str, ReviewDriver]) -> None:
        self.drivers = drivers

    def _driver(self, connection: str) -> ReviewDriver:
        try:
            return self.drivers[connection]
        except KeyError:
            raise ApplicationError(
                f"connection {connection!r} is not configured on this worker",
                non_retryable=True,
            ) from None

    @activity.defn(name="post_report")
    async def post_report(self, report: ReportRequest) -> ReportResult:
        """Idempotent by report.tag; errors propagate so Temporal retries with backoff."""
        try:
            return await self._driver(report.change.connection).post_report(report)
        except ChangeNotFound as exc:
            raise ApplicationError(str(exc), non_retryable=True) from exc

    @activity.defn(name="get_change")
    async def get_change(self, change: ChangeInfo) -> ChangeInfo:
        """The change's current state (input: any ChangeInfo-shaped reference to it)."""
        try:
            return await self._driver(change.connection).get_change(change.number)
        except ChangeNotFound as exc:
            raise ApplicationError(str(exc), non_retryable=True) from exc

    @activity.defn(name="submit")
    async def submit(self, request: SubmitRequest) -> SubmitResult:
        """Merge the change; a refusal is an answer (merge-failure), not an error to retry."""
        driver = self._driver(request.change.connection)
        try:
            await driver.submit(request.change)
        except SubmitRefused as exc:
            # A retried activity whose first attempt merged: the change is merged, all is well.
            if (await driver.get_change(request.change.number)).status == "MERGED":
                return SubmitResult(ok=True)
            return SubmitResult(ok=False, error=str(exc))
        return SubmitResult(ok=True)

    @activity.defn(name="report_and_submit")
    async def report_and_submit(self, request: ReportAndSubmitRequest) -> SubmitResult:
        """Post the report (idempotent by its tag), then merge: a retry posts nothing twice."""
        await self.post_report(request.report)
        return await self.submit(request.submit)

    @activity.defn(name="report_and_submit_batch")
    async def report_and_submit_batch(
        self, request: ReportAndSubmitBatchRequest
    ) -> ReportAndSubmitBatchResult:
        """Each item in turn as report_and_submit does; stop at the first refusal, since the
        items after it were tested on top of it. A retry starts again from the first item: its
        report is not posted twice and its merge is recognised."""
        results: list[SubmitResult] = []
        for index, item in enumerate(request.items):
            activity.heartbeat(index)
            result = await self.report_and_submit(item)
            results.append(result)
            if not result.ok:
                break
        return ReportAndSubmitBatchResult(results=results)
