"""What is reported back to the review system."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lockmaster.model.base import Model
from lockmaster.model.change import ChangeRef

ReportAction = Literal[
    "enqueue",
    "start",
    "success",
    "failure",
    "merge-conflict",
    "merge-failure",
    "dequeue",
    "no-jobs",
    "config-error",
]


class ReportRequest(Model):
    change: ChangeRef
    pipeline: str
    action: ReportAction
    message: str
    labels: dict[str, int] = Field(default_factory=dict)
    # Idempotency key: a report with this tag already on the change is not posted again.
    tag: str


class ReportResult(Model):
    posted: bool  # False when the same tag was already there (a retried activity)
