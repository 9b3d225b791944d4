"""The gate's run as it was before continue-as-new stopped waiting (histories recorded before
the `continue-without-draining` patch replay through it; such a run then continues as new into
the current code, workflows/gate.py). Its actions are activities of the run, and when history
grows long it starts nothing new, lets what is in flight finish, then continues as new.

Kept only for replay: do not change what it does."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError
from temporalio.exceptions import CancelledError as ActivityCancelled

with workflow.unsafe.imports_passed_through():
    from lockmaster.model.build import BuildRequest, BuildResult, Result
    from lockmaster.model.gate import (
        GateInput,
        ReportAndSubmitBatchRequest,
        ReportAndSubmitBatchResult,
        ReportAndSubmitRequest,
        StatusQuery,
        SubmitRequest,
        SubmitResult,
    )
    from lockmaster.model.report import ReportRequest, ReportResult
    from lockmaster.model.state import PrepareStateRequest, PrepareStateResult
    from lockmaster.pipelines.gate_actions import (
        Action,
        BuildAction,
        CancelAction,
        MergeAction,
        ReportItemAction,
        SubmitBatchAction,
    )
    from lockmaster.pipelines.gate_queue import GateQueue
    from lockmaster.temporal.task_queues import Role
    from lockmaster.workflows.check import BUILD_RETRY, MERGER_RETRY, REPORT_RETRY, log_path
    from lockmaster.workflows.details import queue_details


class LegacyGateRun:
    """Mixed into GateQueueWorkflow (whose state and helpers these methods use)."""

    _input: GateInput | None
    _queue: GateQueue | None
    _tasks: set[asyncio.Task[None]]
    _builds: dict[str, asyncio.Task[None]]
    _dirty: bool

    async def _legacy_loop(self, inp: GateInput, queue: GateQueue) -> None:
        draining = False
        while True:
            await workflow.wait_condition(lambda: self._dirty)
            self._dirty = False
            for command in self._take_pending():  # type: ignore[attr-defined]
                self._apply(command)  # type: ignore[attr-defined]
            if not draining:
                for action in queue.process(workflow.now().timestamp()):
                    self._legacy_carry_out(action)
            if not draining and self._legacy_should_continue_as_new():
                draining = True  # start nothing new; let what runs finish
            workflow.set_current_details(queue_details(
                self.status(StatusQuery()), draining=draining))  # type: ignore[attr-defined]
            if draining and not self._tasks:
                await workflow.wait_condition(workflow.all_handlers_finished)
                for command in self._take_pending():  # type: ignore[attr-defined]
                    self._apply(command)  # type: ignore[attr-defined]
                workflow.continue_as_new(inp)

    def _legacy_should_continue_as_new(self) -> bool:
        assert self._input is not None
        info = workflow.info()
        if info.is_continue_as_new_suggested():
            return True
        limit = self._input.max_history_events
        return limit is not None and info.get_current_history_length() > limit

    def _legacy_carry_out(self, action: Action) -> None:
        if isinstance(action, MergeAction):
            self._spawn(self._merge(action))
        elif isinstance(action, BuildAction):
            task = self._spawn(self._build(action))
            self._builds[action.build.build_id] = task
        elif isinstance(action, CancelAction):
            for build_id in action.build_ids:
                task = self._builds.get(build_id)
                if task is not None and not task.done():
                    task.cancel()
        elif isinstance(action, SubmitBatchAction):
            self._spawn(self._report_and_submit_batch(action))
        else:
            self._spawn(self._report_and_submit(action))


    async def _merge(self, action: MergeAction) -> None:
        assert self._queue is not None and self._input is not None
        try:
            result: PrepareStateResult = await workflow.execute_activity(
                "prepare_state",
                PrepareStateRequest(changes=action.changes,
                                    required_projects=self._required_projects(action.key),
                                    merge_date=self._input.state.merge_date),
                result_type=PrepareStateResult, task_queue=self._tq(Role.ORCHESTRATOR),
                start_to_close_timeout=timedelta(minutes=10), retry_policy=MERGER_RETRY,
            )
        except ActivityError as exc:
            # The merger kept failing (not a conflict: git or the review system broke). The item
            # cannot be tested: it is reported as not mergeable rather than left waiting forever.
            result = PrepareStateResult(ok=False, error=f"the merger failed: {exc.cause or exc}")
        self._queue.merge_done(action.key, action.buildset, result)


    async def _build(self, action: BuildAction) -> None:
        assert self._queue is not None
        queue = self._queue
        item = queue.item(action.key)
        if item is None or item.state is None:
            return
        build = action.build
        request = BuildRequest(
            build_id=build.build_id, pipeline=item.pipeline, change=item.change,
            job=action.job, state=item.state, attempt=build.attempt,
            precedence=self._input.precedence if self._input else 0,
            position=queue.state.items.index(item) if item in queue.state.items else 0,
            log_path=log_path(item.pipeline, item.change, action.job.name, build.build_id),
            artifacts=queue.artifacts_for(action.key, action.job.name),
        )
        build.started = workflow.now().timestamp()
        try:
            result: BuildResult = await workflow.execute_activity(
                "run_build", request, result_type=BuildResult, task_queue=self._tq(Role.EXECUTOR),
                start_to_close_timeout=timedelta(seconds=action.job.timeout + 300),
                heartbeat_timeout=timedelta(seconds=queue.state.build_heartbeat_timeout),
                retry_policy=BUILD_RETRY,
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=f"{action.job.name} for {item.key} on {build.changes}",
            )
        except (ActivityError, asyncio.CancelledError) as exc:
            cancelled = isinstance(exc, asyncio.CancelledError) or isinstance(
                getattr(exc, "cause", None), ActivityCancelled)
            if cancelled:
                queue.build_cancelled(action.key, build.build_id)
                return
            now = workflow.now().timestamp()
            result = BuildResult(build_id=build.build_id, job=action.job.name, result=Result.RETRY,
                                 attempt=build.attempt, started=now, ended=now,
                                 message=f"executor error: {exc}")
        finally:
            self._builds.pop(build.build_id, None)
        self._run_all(queue.build_done(action.key, action.buildset, result))


    async def _report_and_submit(self, action: ReportItemAction) -> None:
        assert self._queue is not None
        item_id = action.item_id or self._item_id(action.key)
        if action.submit:
            self._record_tested(action.key)
        if action.submit and workflow.patched("report-and-submit-in-one-activity"):
            report = ReportRequest(change=action.change, pipeline=action.pipeline,
                                   action=action.action, message=action.message,
                                   labels=action.labels,
                                   tag=f"{action.pipeline}:{item_id}:{action.action}")
            result: SubmitResult = await workflow.execute_activity(
                "report_and_submit",
                ReportAndSubmitRequest(report=report, submit=SubmitRequest(change=action.change)),
                result_type=SubmitResult, task_queue=self._tq(Role.ORCHESTRATOR),
                start_to_close_timeout=timedelta(minutes=2),
                schedule_to_close_timeout=timedelta(hours=1), retry_policy=REPORT_RETRY,
                summary=f"report and submit {action.change.key}",
            )
        else:
            await self._post(action.change, action.pipeline, action.action, action.message,
                             action.labels, item_id)
            if not action.submit:
                return
            result = await workflow.execute_activity(
                "submit", SubmitRequest(change=action.change), result_type=SubmitResult,
                task_queue=self._tq(Role.ORCHESTRATOR),
                start_to_close_timeout=timedelta(minutes=2),
                schedule_to_close_timeout=timedelta(hours=1), retry_policy=REPORT_RETRY,
            )
        await self._submit_done(action, result, item_id)

    async def _report_and_submit_batch(self, batch: SubmitBatchAction) -> None:
        assert self._queue is not None
        item_ids = {}
        requests = []
        for action in batch.reports:
            item_ids[action.key] = item_id = action.item_id or self._item_id(action.key)
            self._record_tested(action.key)
            requests.append(ReportAndSubmitRequest(
                report=ReportRequest(change=action.change, pipeline=action.pipeline,
                                     action=action.action, message=action.message,
                                     labels=action.labels,
                                     tag=f"{action.pipeline}:{item_id}:{action.action}"),
                submit=SubmitRequest(change=action.change)))
        keys = " ".join(a.change.key for a in batch.reports)
        result: ReportAndSubmitBatchResult = await workflow.execute_activity(
            "report_and_submit_batch", ReportAndSubmitBatchRequest(items=requests),
            result_type=ReportAndSubmitBatchResult, task_queue=self._tq(Role.ORCHESTRATOR),
            start_to_close_timeout=timedelta(minutes=2) * len(requests),
            heartbeat_timeout=timedelta(minutes=2),
            schedule_to_close_timeout=timedelta(hours=1), retry_policy=REPORT_RETRY,
            summary=f"report and submit {keys}",
        )
        # Every outcome into the queue first, then the reports they call for.
        follow_ups: list[tuple[Action, str]] = []
        for index, action in enumerate(batch.reports):
            if index < len(result.results):
                done = result.results[index]
                follow_ups += [(f, item_ids[action.key])
                               for f in self._queue.submit_done(action.key, done.ok, done.error)]
            else:
                self._queue.submit_not_attempted(action.key)
        for follow_up, item_id in follow_ups:
            await self._follow_up(follow_up, item_id)

    async def _submit_done(self, action: ReportItemAction, result: SubmitResult,
                           item_id: str) -> None:
        assert self._queue is not None
        for follow_up in self._queue.submit_done(action.key, result.ok, result.error):
            await self._follow_up(follow_up, item_id)

    async def _follow_up(self, follow_up: Action, item_id: str) -> None:
        if isinstance(follow_up, ReportItemAction):
            await self._post(follow_up.change, follow_up.pipeline, follow_up.action,
                             follow_up.message, follow_up.labels, item_id)
        else:
            self._legacy_carry_out(follow_up)


    async def _post(self, change, pipeline, action, message, labels, item_id) -> None:  # type: ignore[no-untyped-def]
        await workflow.execute_activity(
            "post_report",
            ReportRequest(change=change, pipeline=pipeline, action=action, message=message,
                          labels=labels, tag=f"{pipeline}:{item_id}:{action}"),
            result_type=ReportResult, task_queue=self._tq(Role.ORCHESTRATOR),
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_close_timeout=timedelta(hours=1), retry_policy=REPORT_RETRY,
        )

