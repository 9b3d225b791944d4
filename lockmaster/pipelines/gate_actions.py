"""What the gate's pure queue code asks the gate workflow to do: merge, build, cancel, report (and
submit). The workflow carries these out and feeds the outcomes back; nothing here does I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from lockmaster.model.build import JobSpec
from lockmaster.model.change import ChangeRef
from lockmaster.model.gate import GateBuild
from lockmaster.model.report import ReportAction


@dataclass(frozen=True)
class MergeAction:
    key: str
    buildset: int
    changes: list[ChangeRef]


@dataclass(frozen=True)
class BuildAction:
    key: str
    buildset: int
    build: GateBuild
    job: JobSpec


@dataclass(frozen=True)
class CancelAction:
    build_ids: list[str]


@dataclass(frozen=True)
class ReportItemAction:
    key: str
    change: ChangeRef
    pipeline: str
    action: ReportAction
    message: str
    labels: dict[str, int]
    # After the report: submit the change (success) or nothing.
    submit: bool = False
    # The item (one enqueue of the change) this report belongs to: names the report so that a
    # retried report is posted once, while a later enqueue of the same change reports anew.
    item_id: str = ""


@dataclass(frozen=True)
class SubmitBatchAction:
    """Report and submit these successful items one after the other, in this order, stopping at
    the first the review system refuses: each passed on the state of the ones before it plus
    itself, so once those merged it is next in line (the queue's serial path from one merge to
    the next without a round trip through the workflow per change)."""

    reports: list[ReportItemAction]


Action = MergeAction | BuildAction | CancelAction | ReportItemAction | SubmitBatchAction


@dataclass
class ItemLabels:
    """The pipeline's reporters: labels per report (None: that report is not made) and the
    pipeline's own first lines."""

    start: dict[str, int] | None = None
    success: dict[str, int] = field(default_factory=dict)
    failure: dict[str, int] = field(default_factory=dict)
    enqueue: dict[str, int] | None = None
    dequeue: dict[str, int] | None = None
    messages: dict[str, str] = field(default_factory=dict)
    status_url: str | None = None  # web.url: start and enqueue reports link to the change
