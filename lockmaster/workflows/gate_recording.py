"""The gate's records for the results database, as Work (workflows/longlived.py): short,
idempotent activities of the current run, issued again by the next run if it continued as new
first, never holding up the queue's deciding. Every build is recorded, ABORTED and CANCELED
ones from resets and dequeues included; an item's buildset when its final report is made.

What one wake-up of the queue records goes in one activity (RecordBuildsRequest: its builds
and buildsets): an activity per build cost the gate benchmark ~27% more workflow tasks and
~38% more history events.

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
        ChangeAhead,
        RecordBuildsRequest,
        changes_ahead,
    )
    from lockmaster.model.work import Work, WorkDone
    from lockmaster.workflows.recording import work_options

# Report actions that end an item, and the buildset result each records.
FINAL_REPORTS = {"success": "SUCCESS", "failure": "FAILURE", "merge-conflict": "MERGE_CONFLICT",
                 "merge-failure": "MERGE_FAILURE", "dequeue": "DEQUEUED",
                 "no-jobs": "NO_JOBS", "config-error": "CONFIG_ERROR"}


def build_context(item: GateItem, voting: bool, started: float | None,
                  changes: str) -> dict[str, Any]:
    """What a build's Work carries for its record (its result may come after a reset or a
    dequeue, when the item no longer knows the build): small, it is carried state. The
    speculative state as `N,P N,P` (GateBuild.changes)."""
    return {"item_id": item.id, "voting": voting, "started": started,
            "change": item.change.model_dump(mode="json"), "changes": changes}


def _tested(key: str, change: ChangeRef, known: dict[str, ChangeRef]) -> list[ChangeAhead]:
    """The build's speculative state, each change as well as the queue still knows it."""
    found = []
    for token in key.split():
        ref = known.get(token)
        number, _, patchset = token.partition(",")
        found.append(ChangeAhead(
            connection=ref.connection if ref else change.connection,
            project=ref.project if ref else None, number=int(number), patchset=int(patchset)))
    return found


def build_record(ctx: dict[str, Any], known: dict[str, ChangeRef], result: BuildResult | None,
                 pipeline: str, queue: str, now: float) -> BuildRecord | None:
    """The record of a finished build (`result` None: cancelled before it reported).
    `known`: the changes the queue knows, by `N,P` (to name the state's changes)."""
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
    key = ctx.get("changes") or change.key
    record = BuildRecord.of(result, buildset_uuid=ctx["item_id"], pipeline=pipeline,
                            change=change, voting=ctx["voting"], queue=queue,
                            buildset_try=ctx["buildset"], changes_key=key)
    return record.model_copy(update={"changes": _tested(key, change, known),
                                     **({"result": "CANCELED"} if canceled else {})})


def item_record(item: GateItem | None, item_id: str, change: ChangeRef, pipeline: str,
                queue: str, action: str, message: str | None,
                now: float) -> BuildsetRecord | None:
    """The record of an item's buildset at its final report (None: not a final one)."""
    result = FINAL_REPORTS.get(action)
    if result is None:
        return None
    return BuildsetRecord(
        uuid=item_id, pipeline=pipeline, queue=queue, change=change, result=result,
        message=message, reason=item.merge_error if item is not None else None,
        started=item.enqueued_at if item is not None else None, ended=now,
        changes=changes_ahead(item.changes if item is not None else [change]))


def records_work(request: RecordBuildsRequest, task_queue: str) -> Work:
    """One activity for what one wake-up of the queue recorded."""
    first = request.builds[0].uuid if request.builds else request.buildsets[0].uuid
    count = len(request.builds) + len(request.buildsets)
    return Work(key=f"record/{first}/{count}", kind="record", activity="record_builds",
                arg=request.model_dump(mode="json"), options=work_options(task_queue),
                summary=f"record {len(request.builds)} build(s), "
                        f"{len(request.buildsets)} buildset(s)")


def recorded(work: Work, done: WorkDone) -> None:
    """The continuation of a recording: nothing to decide; a failure is said, not retried."""
    if not done.ok and not done.cancelled:
        workflow.logger.warning("results database: %s not recorded: %s", work.summary,
                                done.error)
