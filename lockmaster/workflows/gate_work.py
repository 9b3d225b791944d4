"""How the gate carries out its queue's actions as `Work` (workflows/longlived.py): merges,
reports and submits are short activities of the current run, issued again by the next run if
it continued as new first; builds are activities that outlive the run (their result reaches the
next run by signal), or in older runs detached children. Every result
goes back into the pure queue through a continuation of the work's kind."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from lockmaster.execution.build_limits import (
        BUILD_RETRY,
        activity_timeout,
        classify_failure,
    )
    from lockmaster.model.build import BuildResult
    from lockmaster.model.change import ChangeRef
    from lockmaster.model.gate import (
        GateInput,
        ReportAndSubmitBatchRequest,
        ReportAndSubmitBatchResult,
        ReportAndSubmitRequest,
        SubmitRequest,
        SubmitResult,
    )
    from lockmaster.model.report import ReportRequest
    from lockmaster.model.results import RecordBuildsRequest
    from lockmaster.model.state import (
        PrepareStateRequest,
        PrepareStateResult,
        PrepareStatesRequest,
        PrepareStatesResult,
    )
    from lockmaster.model.work import Work, WorkDone, WorkOptions
    from lockmaster.pipelines.gate_actions import (
        Action,
        BuildAction,
        CancelAction,
        MergeAction,
        ReportItemAction,
        SubmitBatchAction,
    )
    from lockmaster.pipelines.gate_builds import batch_done, build_request
    from lockmaster.pipelines.gate_merges import merge_rows
    from lockmaster.pipelines.gate_queue import GateQueue
    from lockmaster.pipelines.gate_tested import remember, tested_record
    from lockmaster.temporal.task_queues import Role
    from lockmaster.workflows.check import MERGER_RETRY, REPORT_RETRY
    from lockmaster.workflows.gate_recording import (
        build_context,
        build_record,
        item_record,
        recorded,
        records_work,
    )
    from lockmaster.workflows.longlived import WorkTracker
    from lockmaster.workflows.work_options import retry_fields

MERGE_ROW = 8  # merges per prepare_states activity
# The results database: records go in batches of at most this many, each handed out at most
# this long after its first record (one activity per build cost the gate benchmark ~27% more
# workflow tasks; per pass, still ~25%: builds end at different moments).
RECORD_BATCH = 50
RECORD_DELAY = timedelta(seconds=5)


class GateWork:
    """Mixed into GateQueueWorkflow: its actions as work, and the work's continuations."""

    _input: GateInput | None
    _queue: GateQueue | None
    _work: WorkTracker

    def _register_continuations(self) -> None:
        self._work.on("merge", self._merged)
        self._work.on("merge-row", self._merged_row)
        self._work.on("build", self._built)
        self._work.on("report", lambda work, done: None)
        self._work.on("submit", self._submitted)
        self._work.on("submit-batch", self._batch_submitted)
        self._work.on("record", recorded)  # the results database (gate_recording.py)

    def _carry_out_all(self, actions: list[Action]) -> None:
        """The actions of one pass. Several merges (a row of items after a reset, or items
        entering the window) go to the merger as one row: each state is merged onto the one
        before it, instead of every item merging every change ahead at once (after a reset
        of N items that was N^2/2 merges on the merger's CPU; versioned)."""
        merges = [a for a in actions if isinstance(a, MergeAction)]
        row = len(merges) > 1 and workflow.patched("merge-rows")
        for action in actions:
            if not (row and isinstance(action, MergeAction)):
                self._carry_out(action)
        if row:
            # Rows of at most MERGE_ROW items: a row's argument holds every item's changes (its
            # size grows with the square of the row: a whole 150-item queue passed Temporal's
            # 2 MB payload limit in the soak), and its items wait for the whole row.
            # The item at the front alone, then rows doubling (gate_merges.merge_rows).
            if workflow.patched("merge-rows-front-first"):
                sizes = merge_rows(len(merges), MERGE_ROW)
            else:
                size = MERGE_ROW if workflow.patched("merge-rows-bounded") else len(merges)
                sizes = [min(size, len(merges) - s) for s in range(0, len(merges), size)]
            start = 0
            for size in sizes:
                chunk = merges[start:start + size]
                start += size
                if len(chunk) == 1:
                    self._carry_out(chunk[0])
                else:
                    self._submit_merge_row(chunk)

    def _carry_out(self, action: Action) -> None:
        if isinstance(action, MergeAction):
            self._submit_merge(action)
        elif isinstance(action, BuildAction):
            self._submit_build(action)
        elif isinstance(action, CancelAction):
            for build_id in action.build_ids:
                self._work.cancel(f"build/{build_id}")
        elif isinstance(action, SubmitBatchAction):
            self._submit_batch(action)
        elif action.submit:
            self._submit_one(action)
        else:
            self._report(action, self._item_id_of(action))

    # --- merges -----------------------------------------------------------------------------

    def _submit_merge(self, action: MergeAction) -> None:
        assert self._input is not None
        request = PrepareStateRequest(changes=action.changes,
                                      required_projects=self._required_projects(action.key),
                                      merge_date=self._input.state.merge_date)
        self._work.submit(Work(
            key=f"merge/{action.key}/{action.buildset}", kind="merge",
            context={"key": action.key, "buildset": action.buildset},
            activity="prepare_state", arg=request.model_dump(mode="json"),
            options=WorkOptions(task_queue=self._tq(Role.ORCHESTRATOR), start_to_close=600,
                                **retry_fields(MERGER_RETRY)),
            summary=f"merge {' '.join(c.key for c in action.changes)}"))

    def _submit_merge_row(self, merges: list[MergeAction]) -> None:
        assert self._input is not None
        requests = [PrepareStateRequest(changes=a.changes,
                                        required_projects=self._required_projects(a.key),
                                        merge_date=self._input.state.merge_date)
                    for a in merges]
        first = merges[0]
        self._work.submit(Work(
            key=f"merge-row/{first.key}/{first.buildset}/{len(merges)}", kind="merge-row",
            context={"items": [[a.key, a.buildset] for a in merges]},
            activity="prepare_states",
            arg=PrepareStatesRequest(requests=requests).model_dump(mode="json"),
            options=WorkOptions(task_queue=self._tq(Role.ORCHESTRATOR),
                                start_to_close=600 + 60 * len(merges),
                                **retry_fields(MERGER_RETRY)),
            summary=f"merge a row of {len(merges)}: {' '.join(a.key for a in merges)}"))

    def _merged_row(self, work: Work, done: WorkDone) -> None:
        assert self._queue is not None
        items = work.context["items"]
        if done.ok and done.result is not None:
            results = PrepareStatesResult.model_validate(done.result).results
        else:
            results = [PrepareStateResult(ok=False, error=f"the merger failed: {done.error}")
                       for _ in items]
        for (key, buildset), result in zip(items, results, strict=True):
            self._queue.merge_done(key, buildset, result)

    def _merged(self, work: Work, done: WorkDone) -> None:
        assert self._queue is not None
        if done.ok and done.result is not None:
            result = PrepareStateResult.model_validate(done.result)
        else:
            # The merger kept failing (not a conflict: git or the review system broke). The
            # item cannot be tested: it is reported as not mergeable, not left waiting forever.
            result = PrepareStateResult(ok=False, error=f"the merger failed: {done.error}")
        self._queue.merge_done(work.context["key"], work.context["buildset"], result)

    # --- builds -------------------------------------------------------------------------------

    def _submit_build(self, action: BuildAction) -> None:
        assert self._queue is not None and self._input is not None
        queue = self._queue
        request = build_request(queue, action, self._input.precedence)
        if request is None:
            return
        build = action.build
        build.started = workflow.now().timestamp()
        # A build is an activity of this run that outlives it (temporal/outliving.py); in runs
        # recorded before that, a detached child.
        outlives = workflow.patched("builds-outlive-runs")
        item = queue.item(action.key)
        self._work.submit(Work(
            key=f"build/{build.build_id}", kind="build", detached=not outlives,
            outlives_run=outlives,
            context={"key": action.key, "buildset": action.buildset, "job": action.job.name,
                     "build_id": build.build_id, "attempt": build.attempt,
                     # For its record in the results database.
                     **(build_context(item, action.job.voting, build.started, build.changes)
                        if item else {})},
            activity="run_build", arg=request.model_dump(mode="json"),
            options=WorkOptions(task_queue=self._tq(Role.EXECUTOR),
                                start_to_close=activity_timeout(action.job).total_seconds(),
                                heartbeat=queue.state.build_heartbeat_timeout,
                                wait_cancellation=True, **retry_fields(BUILD_RETRY)),
            summary=f"{action.job.name} for {action.key} on {build.changes}"))

    def _built(self, work: Work, done: WorkDone) -> None:
        assert self._queue is not None
        ctx = work.context
        if done.cancelled:
            self._record_build(ctx, None)
            self._queue.build_cancelled(ctx["key"], ctx["build_id"])
            return
        if done.ok and done.result is not None:
            result = BuildResult.model_validate(done.result)
        else:
            # Its limit reached: TIMED_OUT, never run again; its executor lost: RETRY.
            failure = classify_failure(done.timeout_type, done.error or "unknown")
            now = workflow.now().timestamp()
            result = BuildResult(build_id=ctx["build_id"], job=ctx["job"], result=failure.result,
                                 attempt=ctx["attempt"], started=now, ended=now,
                                 message=failure.message)
        self._record_build(ctx, result)
        self._run_all(self._queue.build_done(ctx["key"], ctx["buildset"], result))

    def _records(self) -> RecordBuildsRequest:
        """What was recorded and not handed out yet (not carried: handed out before the run
        continues as new). Only the main loop hands batches out (`_flush_records`, and its
        sleep wakes when the first record is RECORD_DELAY old): a timer task of its own,
        started from a result's handler, made replays under load issue the recording where
        the live run had issued a build (a nondeterminism error)."""
        pending = self.__dict__.get("_records_pending")
        if pending is None or not (pending.builds or pending.buildsets):
            pending = self._records_pending = RecordBuildsRequest(builds=[])
            self._records_since = workflow.now().timestamp()
        return pending

    def _records_wait(self) -> timedelta | None:
        """How long the main loop may sleep before the waiting batch is due (None: none waits)."""
        pending = self.__dict__.get("_records_pending")
        if pending is None or not (pending.builds or pending.buildsets):
            return None
        due = self._records_since + RECORD_DELAY.total_seconds()
        return timedelta(seconds=max(0.001, due - workflow.now().timestamp()))

    def _flush_records(self, force: bool = False) -> None:
        """Hand what was recorded to one activity once RECORD_BATCH records wait, once the
        first of them is RECORD_DELAY old, or (force) before the run continues as new."""
        pending = self.__dict__.get("_records_pending")
        if pending is None or not (pending.builds or pending.buildsets):
            return
        due = workflow.now().timestamp() - self._records_since >= RECORD_DELAY.total_seconds()
        if not force and not due and len(pending.builds) + len(pending.buildsets) < RECORD_BATCH:
            return
        self._records_pending = RecordBuildsRequest(builds=[])
        self._work.submit(records_work(pending, self._tq(Role.ORCHESTRATOR)))

    def _record_build(self, ctx: dict[str, Any], result: BuildResult | None) -> None:
        """Its record in the results database (Work: never holds the queue up)."""
        assert self._queue is not None
        if "item_id" not in ctx or not self.__dict__.get("_recording", False):
            return
        state = self._queue.state
        # The changes it tested, as the queue knows them: the items' own, and the item's state
        # (linear in the queue: this runs for every build).
        item = self._queue.item(ctx["key"])
        known = {i.change.key: i.change for i in state.items}
        known.update((c.key, c) for c in (item.changes if item is not None else []))
        record = build_record(ctx, known, result, state.pipeline, state.queue,
                              workflow.now().timestamp())
        if record is not None:
            self._records().builds.append(record)
            if getattr(self, "_legacy", False):  # (its loop does not flush)
                self._flush_records(force=True)

    def _record_item(self, key: str, item_id: str, change: ChangeRef, action: str,
                     message: str | None) -> None:
        """An item's buildset, at its final report (before the item leaves the queue)."""
        assert self._queue is not None
        if action not in ("success", "failure", "merge-conflict", "merge-failure", "dequeue",
                          "no-jobs", "config-error") \
                or not self.__dict__.get("_recording", False):
            return
        state = self._queue.state
        item = self._queue.item(key)
        record = item_record(item if item is not None and item.id == item_id else None,
                             item_id, change, state.pipeline, state.queue, action, message,
                             workflow.now().timestamp())
        if record is not None:
            self._records().buildsets.append(record)
            if getattr(self, "_legacy", False):
                self._flush_records(force=True)

    # --- reports and submits ------------------------------------------------------------------

    def _report(self, action: ReportItemAction, item_id: str) -> None:
        request = self._report_request(action, item_id)
        self._record_item(action.key, item_id, action.change, action.action, action.message)
        self._work.submit(Work(
            key=f"report/{request.tag}", kind="report", persist=True,
            activity="post_report", arg=request.model_dump(mode="json"),
            options=self._review_options(60), summary=f"report {action.action} on "
                                                      f"{action.change.key}"))

    def _submit_one(self, action: ReportItemAction) -> None:
        item_id = self._item_id_of(action)
        self._record_tested(action.key)
        request = ReportAndSubmitRequest(report=self._report_request(action, item_id),
                                         submit=SubmitRequest(change=action.change))
        self._work.submit(Work(
            key=f"submit/{item_id}", kind="submit", persist=True,
            context={"key": action.key, "item_id": item_id},
            activity="report_and_submit", arg=request.model_dump(mode="json"),
            options=self._review_options(120),
            summary=f"report and submit {action.change.key}"))

    def _submitted(self, work: Work, done: WorkDone) -> None:
        assert self._queue is not None
        result = SubmitResult.model_validate(done.result) if done.ok and done.result else \
            SubmitResult(ok=False, error=done.error)
        if result.ok:
            self._record_merged(work.context["key"], work.context["item_id"],
                                _report_message(work.arg))
        self._follow_ups(self._queue.submit_done(work.context["key"], result.ok, result.error),
                        work.context["item_id"])

    def _submit_batch(self, batch: SubmitBatchAction) -> None:
        items: list[dict[str, str]] = []
        requests = []
        for action in batch.reports:
            item_id = self._item_id_of(action)
            self._record_tested(action.key)
            items.append({"key": action.key, "item_id": item_id})
            requests.append(ReportAndSubmitRequest(report=self._report_request(action, item_id),
                                                   submit=SubmitRequest(change=action.change)))
        keys = " ".join(a.change.key for a in batch.reports)
        n = len(requests)
        self._work.submit(Work(
            key=f"submit/{items[0]['item_id']}+{n - 1}", kind="submit-batch", persist=True,
            context={"items": items},
            activity="report_and_submit_batch",
            arg=ReportAndSubmitBatchRequest(items=requests).model_dump(mode="json"),
            options=self._review_options(120 * n, heartbeat=120),
            summary=f"report and submit {keys}"))

    def _batch_submitted(self, work: Work, done: WorkDone) -> None:
        assert self._queue is not None
        items: list[dict[str, Any]] = work.context["items"]
        results = ReportAndSubmitBatchResult.model_validate(done.result).results \
            if done.ok and done.result else []
        item_ids = {item["key"]: item["item_id"] for item in items}
        requests = work.arg.get("items") or [{}] * len(items)  # (empty once a child took it)
        for item, request, submitted in zip(items, requests, results, strict=False):
            if submitted.ok:
                self._record_merged(item["key"], item["item_id"], _report_message(request))
        for key, actions in batch_done(self._queue, [i["key"] for i in items], results,
                                       None if done.ok else done.error or "unknown"):
            self._follow_ups(actions, item_ids[key])

    def _record_merged(self, key: str, item_id: str, message: str | None) -> None:
        assert self._queue is not None
        item = self._queue.item(key)
        if item is not None:
            self._record_item(key, item_id, item.change, "success", message)

    def _follow_ups(self, actions: list[Action], item_id: str) -> None:
        for action in actions:
            if isinstance(action, ReportItemAction) and not action.submit:
                self._report(action, action.item_id or item_id)
            else:
                self._carry_out(action)

    def _review_options(self, seconds: float, heartbeat: float | None = None) -> WorkOptions:
        """A report or submit: retried with backoff; one that fails a whole round (the review
        system is down) shows stuck and is tried again, round after round, until it is taken."""
        assert self._input is not None
        return WorkOptions(task_queue=self._tq(Role.ORCHESTRATOR),
                           start_to_close=min(seconds, self._input.review_round),
                           schedule_to_close=self._input.review_round, heartbeat=heartbeat,
                           **retry_fields(REPORT_RETRY))

    @staticmethod
    def _report_request(action: ReportItemAction, item_id: str) -> ReportRequest:
        return ReportRequest(change=action.change, pipeline=action.pipeline,
                             action=action.action, message=action.message,
                             labels=action.labels,
                             tag=f"{action.pipeline}:{item_id}:{action.action}")

    # --- shared with the legacy run -----------------------------------------------------------

    def _item_id(self, key: str) -> str:
        assert self._queue is not None
        item = self._queue.item(key)
        return item.id if item is not None else key

    def _item_id_of(self, action: ReportItemAction) -> str:
        return action.item_id or self._item_id(action.key)

    def _required_projects(self, key: str) -> list[str]:
        assert self._queue is not None
        item = self._queue.item(key)
        return sorted({p for j in item.jobs for p in j.required_projects}) if item else []

    def _record_tested(self, key: str) -> None:
        """Remember what the item's builds tested before its submit is asked for: the review
        system announces the merge while the submit runs, and the publication that the
        announcement starts looks the gate's build up here."""
        assert self._queue is not None
        item = self._queue.item(key)
        record = tested_record(item, workflow.info().workflow_id,
                               workflow.now().timestamp()) if item is not None else None
        if record is not None:
            remember(self._queue.state, record)

    def _run_all(self, actions: list[Action]) -> None:
        raise NotImplementedError  # GateQueueWorkflow's

    def _tq(self, role: Role) -> str:
        raise NotImplementedError  # GateQueueWorkflow's


def _report_message(request: dict[str, Any]) -> str | None:
    """The success report a report-and-submit posted (its Work's argument, while it has it)."""
    report = request.get("report")
    return report.get("message") if isinstance(report, dict) else None
