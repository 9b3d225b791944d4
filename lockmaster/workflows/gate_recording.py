"""The gate's records for the results database, as Work (workflows/longlived.py): short,
idempotent activities of the current run, issued again by the next run if it continued as new
first, never holding up the queue's deciding. Every build is recorded, ABORTED and CANCELED
ones from resets and dequeues included; an item's buildset when its final report is made.

A gate item is one buildset in the database (uuid: the item's id); its builds carry the item's
reset count as `buildset_try`.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from lockmaster.model.build import BuildResult
    from lockmaster.model.change import ChangeRef
    from lockmaster.model.gate import GateItem
    from lockmaster.model.results import (
        BuildRecord,
        BuildsetRecord,
        RecordBuildsetRequest,
        RecordBuildsRequest,
        changes_ahead,
    )
    from lockmaster.model.work import Work, WorkDone
    from lockmaster.workflows.recording import work_options

# Report actions that end an item, and the buildset result each records.
FINAL_REPORTS = {"success": "SUCCESS", "failure": "FAILURE", "merge-conflict": "MERGE_CONFLICT",
                 "merge-failure": "MERGE_FAILURE", "dequeue": "DEQUEUED",
                 "no-jobs": "NO_JOBS", "config-error": "CONFIG_ERROR"}


def build_context(item: GateItem, voting: bool, started: float | None) -> dict[str, Any]:
    """What a build's Work carries for its record (its result may come after a reset or a
    dequeue, when the item no longer knows the build)."""
    return {"item_id": item.id, "voting": voting, "started": started,
            "change": item.change.model_dump(mode="json")}


def build_record_work(ctx: dict[str, Any], item: GateItem | None, result: BuildResult | None,
                      pipeline: str, queue: str, task_queue: str, now: float) -> Work | None:
    """The Work recording a finished build (`result` None: cancelled before it reported)."""
    if "item_id" not in ctx:  # a build issued before recording existed
        return None
    if result is None:
        result = BuildResult.model_validate({
            "build_id": ctx["build_id"], "job": ctx["job"], "result": "ABORTED",
            "attempt": ctx["attempt"], "started": ctx.get("started"), "ended": now,
            "message": "cancelled (the item was reset or left the queue)"})
        canceled = True
    else:
        canceled = False
    change = ChangeRef.model_validate(ctx["change"])
    tested = item.changes if item is not None and item.buildset == ctx["buildset"] else [change]
    record = BuildRecord.of(result, buildset_uuid=ctx["item_id"], pipeline=pipeline,
                            change=change, voting=ctx["voting"], queue=queue,
                            buildset_try=ctx["buildset"], changes=tested)
    if canceled:
        record = record.model_copy(update={"result": "CANCELED"})
    return Work(key=f"record/build/{result.build_id}", kind="record", activity="record_builds",
                arg=RecordBuildsRequest(builds=[record]).model_dump(mode="json"),
                options=work_options(task_queue), summary=f"record build {result.job}")


def item_record_work(item: GateItem | None, item_id: str, change: ChangeRef, pipeline: str,
                     queue: str, action: str, message: str | None, task_queue: str,
                     now: float) -> Work | None:
    """The Work recording an item's buildset at its final report (None: not a final one)."""
    result = FINAL_REPORTS.get(action)
    if result is None:
        return None
    record = BuildsetRecord(
        uuid=item_id, pipeline=pipeline, queue=queue, change=change, result=result,
        message=message, reason=item.merge_error if item is not None else None,
        started=item.enqueued_at if item is not None else None, ended=now,
        changes=changes_ahead(item.changes if item is not None else [change]))
    return Work(key=f"record/item/{item_id}", kind="record", activity="record_buildset",
                arg=RecordBuildsetRequest(buildset=record).model_dump(mode="json"),
                options=work_options(task_queue), summary=f"record item {change.key}")


def recorded(work: Work, done: WorkDone) -> None:
    """The continuation of a recording: nothing to decide; a failure is said, not retried."""
    if not done.ok and not done.cancelled:
        workflow.logger.warning("results database: %s not recorded: %s", work.summary,
                                done.error)
