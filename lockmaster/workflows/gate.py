"""The gate (Zuul's dependent pipeline): one long-lived workflow per pipeline and shared queue,
`<pipeline>/<queue>` (e.g. `gate/integrated`).

The decisions are the pure `GateQueue` processor's; this workflow feeds it every outcome and
carries out its actions: merges and reports on the orchestrator queue, builds on the executor
queue, cancellations. Operators steer it with signals (enqueue, dequeue, promote, change-updated)
or updates (dequeue, promote: they answer what they did, or why they would do nothing) and read
it with the `status` query. When history grows long it stops starting work, lets what is
in flight finish, and continues as new with the queue's state.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import CancelledError as ActivityCancelled

with workflow.unsafe.imports_passed_through():
    from lockmaster.model.build import BuildRequest, BuildResult, JobSpec, Result
    from lockmaster.model.change import ChangeRef
    from lockmaster.model.gate import (
        ChangeUpdated,
        CommandResult,
        DequeueRequest,
        EnqueueRequest,
        FrozenJobs,
        GateInput,
        GateTestedAnswer,
        GateTestedQuery,
        PromoteRequest,
        QueueStatus,
        ReportAndSubmitBatchRequest,
        ReportAndSubmitBatchResult,
        ReportAndSubmitRequest,
        StatusQuery,
        SubmitRequest,
        SubmitResult,
    )
    from lockmaster.model.report import ReportRequest, ReportResult
    from lockmaster.model.state import (
        DependencyRequest,
        DependencyResult,
        DependentsRequest,
        DependentsResult,
        PrepareStateRequest,
        PrepareStateResult,
    )
    from lockmaster.pipelines import gate_commands, gate_window
    from lockmaster.pipelines.gate_actions import (
        Action,
        BuildAction,
        CancelAction,
        ItemLabels,
        MergeAction,
        ReportItemAction,
        SubmitBatchAction,
    )
    from lockmaster.pipelines.gate_enqueue import Enqueuer, QueuePolicy
    from lockmaster.pipelines.gate_queue import GateQueue
    from lockmaster.pipelines.gate_tested import find_tested, remember, tested_record
    from lockmaster.pipelines.gate_updates import QueueUpdates
    from lockmaster.pipelines.gate_view import queue_status
    from lockmaster.temporal.task_queues import Role, task_queue
    from lockmaster.workflows.check import BUILD_RETRY, MERGER_RETRY, REPORT_RETRY, log_path
    from lockmaster.workflows.details import queue_details
    from lockmaster.workflows.tasks import spawn


Command = EnqueueRequest | DequeueRequest | PromoteRequest | ChangeUpdated


def _numbers(changes: list[str]) -> list[int]:
    """The change numbers of `N` or `N,P` (anything else names no change)."""
    return [int(n) for n in (c.split(",")[0] for c in changes) if n.isdigit()]


def _refuse(reason: str | None) -> None:
    """An operator's update that would change nothing fails with the reason."""
    if reason is not None:
        raise ApplicationError(reason, non_retryable=True)


@workflow.defn(name="GateQueueWorkflow")
class GateQueueWorkflow:
    def __init__(self) -> None:
        self._input: GateInput | None = None
        self._queue: GateQueue | None = None
        self._enqueuer: Enqueuer | None = None
        self._updates: QueueUpdates | None = None
        self._dirty = True
        self._tasks: set[asyncio.Task[None]] = set()
        self._builds: dict[str, asyncio.Task[None]] = {}
        self._pending: list[Command] = []
        # Enqueue requests still being worked on, in the order they arrived (see _enqueue).
        self._enqueuing: list[int] = []
        self._enqueue_tickets = 0
        self._arrivals: dict[int, int] = {}  # ticket -> change number, of those enqueues

    # --- operator commands (signals: also `temporal workflow signal --name ...`) ---------------

    @workflow.signal(name="enqueue")
    def enqueue(self, request: EnqueueRequest) -> None:
        self._pending.append(request)
        self._dirty = True

    @workflow.signal(name="dequeue")
    def dequeue(self, request: DequeueRequest) -> None:
        self._pending.append(request)
        self._dirty = True

    @workflow.signal(name="promote")
    def promote(self, request: PromoteRequest) -> None:
        self._pending.append(request)
        self._dirty = True

    @workflow.signal(name="change-updated")
    def change_updated(self, request: ChangeUpdated) -> None:
        self._pending.append(request)
        self._dirty = True

    # dequeue and promote are updates too, of the same names (`temporal workflow update execute
    # --name dequeue ...`): they answer what they did, and one that would change nothing is
    # rejected with the reason (nothing is recorded). Commands that came before go first, and
    # a change whose enqueue is still being worked on is waited for.

    @workflow.update(name="dequeue")
    async def dequeue_now(self, request: DequeueRequest) -> CommandResult:
        queue = await self._after_arrivals([request.number])
        _refuse(gate_commands.dequeue_refusal(queue, request))
        item = queue.find(request.project, request.number)
        leaving = [item.key, *gate_commands.leaving_with(queue, item.key)] if item else []
        self._apply(request)
        self._dirty = True
        return CommandResult(
            message="dequeued " + (" ".join(leaving) or f"change {request.number} (waiting)"),
            dequeued=leaving, order=[i.key for i in queue.items if i.key not in leaving])

    @dequeue_now.validator
    def _dequeue_changes_something(self, request: DequeueRequest) -> None:
        reason = gate_commands.dequeue_refusal(self._started(), request)
        if not self._arriving([request.number]):
            _refuse(reason)

    @workflow.update(name="promote")
    async def promote_now(self, request: PromoteRequest) -> CommandResult:
        queue = await self._after_arrivals(_numbers(request.changes))
        _refuse(gate_commands.promote_refusal(queue, request.changes))
        self._apply(request)
        self._dirty = True
        order = [i.key for i in queue.items]
        return CommandResult(message=f"promoted {' '.join(request.changes)}", order=order)

    @promote_now.validator
    def _promote_changes_something(self, request: PromoteRequest) -> None:
        reason = gate_commands.promote_refusal(self._started(), request.changes)
        if not self._arriving(_numbers(request.changes)):
            _refuse(reason)

    def _arriving(self, numbers: list[int]) -> bool:
        """Is one of these changes' enqueue signalled and not done yet?"""
        signalled = {c.change.number for c in self._pending if isinstance(c, EnqueueRequest)}
        return bool(set(numbers) & (signalled | set(self._arrivals.values())))

    async def _after_arrivals(self, numbers: list[int]) -> GateQueue:
        await workflow.wait_condition(lambda: not self._arriving(numbers))
        return self._commands_applied()

    def _started(self) -> GateQueue:
        if self._queue is None:
            raise ApplicationError("the queue is starting; try again in a moment")
        return self._queue

    def _commands_applied(self) -> GateQueue:
        queue = self._started()
        for command in self._take_pending():
            self._apply(command)
        return queue

    @workflow.query(name="status")
    def status(self, _: StatusQuery) -> QueueStatus:
        assert self._input is not None
        state = self._input.state
        return queue_status(state, workflow.now().timestamp(),
                            idle=not state.items and not self._tasks and not self._pending,
                            busy=bool(self._tasks or self._pending))

    @workflow.query(name="tested")
    def tested(self, query: GateTestedQuery) -> GateTestedAnswer:
        """What this queue tested for a change it submitted (a merged change's publication
        promotes the gate's package build from it)."""
        if self._input is None:
            return GateTestedAnswer()
        return GateTestedAnswer(tested=find_tested(self._input.state, query.project,
                                                   query.number))

    # --- the loop ------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: GateInput) -> None:
        self._input = inp
        if not inp.state.merge_date:
            inp.state.merge_date = int(workflow.now().timestamp())
        labels = ItemLabels(start=inp.labels.start, success=inp.labels.success,
                            failure=inp.labels.failure, enqueue=inp.labels.enqueue,
                            dequeue=inp.labels.dequeue, messages=dict(inp.labels.messages))
        # Successful items at the head are submitted in batches, and every item's needed
        # changes are checked on each pass (versioned: histories recorded before replay as
        # they ran).
        batches = workflow.patched("submit-in-batches")
        queue = self._queue = GateQueue(inp.state, labels, lambda: workflow.uuid4().hex,
                                        submit_in_batches=batches,
                                        needs_checked=workflow.patched("needs-checked"),
                                        unbuildable_leave=workflow.patched(
                                            "unbuildable-items-leave"))
        self._enqueuer = Enqueuer(queue, QueuePolicy(
            projects=frozenset(inp.projects), require=dict(inp.require), branch=inp.branch,
            known=frozenset(inp.layout_projects) if inp.layout_projects else None))
        self._updates = QueueUpdates(self._enqueuer,
                                     dequeue_on_new_patchset=inp.dequeue_on_new_patchset)
        draining = False
        while True:
            await workflow.wait_condition(lambda: self._dirty)
            self._dirty = False
            for command in self._take_pending():
                self._apply(command)
            if not draining:
                for action in queue.process(workflow.now().timestamp()):
                    self._carry_out(action)
            if not draining and self._should_continue_as_new():
                draining = True  # start nothing new; let what runs finish
            # The Web UI's "Current details": the queue, every item and job (not a command).
            workflow.set_current_details(queue_details(self.status(StatusQuery()),
                                                       draining=draining))
            if draining and not self._tasks:
                await workflow.wait_condition(workflow.all_handlers_finished)
                # Commands that arrived meanwhile travel in the state through `_pending`.
                for command in self._take_pending():
                    self._apply(command)
                workflow.continue_as_new(inp)

    def _should_continue_as_new(self) -> bool:
        assert self._input is not None
        info = workflow.info()
        if info.is_continue_as_new_suggested():
            return True
        limit = self._input.max_history_events
        return limit is not None and info.get_current_history_length() > limit

    def _take_pending(self) -> list[Command]:
        pending, self._pending = self._pending, []
        return pending

    # --- commands ----------------------------------------------------------------------------

    def _apply(self, command: Command) -> None:
        assert self._queue is not None and self._updates is not None
        assert self._enqueuer is not None
        queue = self._queue
        if isinstance(command, EnqueueRequest):
            if self._enqueuer.duplicate(command):
                return  # the same event delivered twice (a hook and stream-events)
            if queue.find_number(command.change.number) is None:
                self._enqueue_tickets += 1
                self._enqueuing.append(self._enqueue_tickets)
                self._arrivals[self._enqueue_tickets] = command.change.number
                self._spawn(self._enqueue(command, self._enqueue_tickets))
        elif isinstance(command, DequeueRequest):
            self._run_all(self._updates.dequeue(command))
        elif isinstance(command, PromoteRequest):
            queue.promote(command.changes)
        else:
            self._run_all(self._updates.change_updated(command, workflow.now().timestamp()))

    async def _enqueue(self, request: EnqueueRequest, ticket: int) -> None:
        try:
            await self._enqueue_in_turn(request, ticket)
        finally:
            self._enqueuing.remove(ticket)
            self._arrivals.pop(ticket, None)

    async def _enqueue_in_turn(self, request: EnqueueRequest, ticket: int) -> None:
        """Enqueue behind the changes it needs; wait unreported while one is neither merged nor
        in the queue; refuse (with a report) what can never be gated here."""
        assert self._queue is not None and self._input is not None
        queue = self._queue
        # While the dependencies are read, merge the change onto what it will most likely be
        # tested on (the queue's tail): the usual case, a change needing nothing outside the
        # queue, then starts its jobs one merger round trip sooner. (Versioned.)
        premerge: asyncio.Task[tuple[list[ChangeRef], PrepareStateResult] | None] | None = None
        if workflow.patched("merge-while-resolving-dependencies") and \
                gate_window.is_active(queue.state, len(queue.items)):
            premerge = asyncio.ensure_future(self._premerge(
                [*queue.tail_changes(), request.change], request.jobs))
        try:
            deps: DependencyResult = await workflow.execute_activity(
                "resolve_dependencies", DependencyRequest(change=request.change),
                result_type=DependencyResult, task_queue=self._tq(Role.ORCHESTRATOR),
                start_to_close_timeout=timedelta(minutes=5), retry_policy=MERGER_RETRY,
            )
        except ActivityError as exc:
            deps = DependencyResult(ok=False, error=f"its dependencies could not be read: "
                                                    f"{exc.cause or exc}")
        prepared = await premerge if premerge is not None else None
        # Changes enter the queue in the order their events arrived (Zuul), not in the order
        # their dependency lookups happen to finish. (Versioned: histories recorded before
        # this replay as they ran.)
        if workflow.patched("enqueue-in-arrival-order"):
            await workflow.wait_condition(lambda: self._enqueuing[0] == ticket)
        assert self._enqueuer is not None
        before = {item.change.number for item in queue.items}
        self._run_all(self._enqueuer.request(request, deps, workflow.now().timestamp(),
                                             prepared=prepared))
        entered = [item.change for item in queue.items if item.change.number not in before]
        # Zuul enqueues the approved changes needing those that entered right behind them, in
        # the same event (versioned: histories recorded before replay as they ran).
        if entered and workflow.patched("enqueue-dependents-behind"):
            await self._enqueue_behind(request, entered)

    async def _enqueue_behind(self, request: EnqueueRequest, entered: list[ChangeRef]) -> None:
        assert self._queue is not None and self._input is not None
        assert self._enqueuer is not None
        queue = self._queue
        try:
            result: DependentsResult = await workflow.execute_activity(
                "find_dependents",
                DependentsRequest(changes=entered, require=dict(self._input.require),
                                  exclude=[f"{i.change.connection}:{i.change.number}"
                                           for i in queue.items]),
                result_type=DependentsResult, task_queue=self._tq(Role.ORCHESTRATOR),
                start_to_close_timeout=timedelta(minutes=5), retry_policy=MERGER_RETRY,
            )
        except ActivityError as exc:
            # They still enter on their own next event; the queue goes on deciding.
            workflow.logger.warning("changes needing %s not looked up: %s",
                                    ", ".join(c.key for c in entered), exc.cause or exc)
            return
        graphs = {**request.other_projects,
                  request.change.project: FrozenJobs(jobs=request.jobs,
                                                     fail_fast=request.fail_fast)}
        for deps in result.found:
            change = deps.changes[-1]
            if change.project not in graphs:
                continue
            frozen = graphs[change.project]
            follower = EnqueueRequest(
                change=change, pipeline=request.pipeline, jobs=frozen.jobs,
                fail_fast=frozen.fail_fast, trigger=f"needs {request.change.key}",
                other_projects={p: g for p, g in graphs.items() if p != change.project})
            self._run_all(self._enqueuer.request(follower, deps, workflow.now().timestamp(),
                                                 behind=True))

    async def _premerge(self, changes: list[ChangeRef],
                        jobs: list[JobSpec]) -> tuple[list[ChangeRef], PrepareStateResult] | None:
        """The speculative merge of `changes`, or None when the merger failed (the queue then
        asks for it again in the usual way)."""
        assert self._input is not None
        try:
            result: PrepareStateResult = await workflow.execute_activity(
                "prepare_state",
                PrepareStateRequest(changes=changes,
                                    required_projects=sorted({p for j in jobs
                                                              for p in j.required_projects}),
                                    merge_date=self._input.state.merge_date),
                result_type=PrepareStateResult, task_queue=self._tq(Role.ORCHESTRATOR),
                start_to_close_timeout=timedelta(minutes=10), retry_policy=MERGER_RETRY,
            )
        except ActivityError:
            return None
        return changes, result

    def _run_all(self, actions: list[Action]) -> None:
        for action in actions:
            self._carry_out(action)

    # --- actions ------------------------------------------------------------------------------

    def _carry_out(self, action: Action) -> None:
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

    def _spawn(self, coro) -> asyncio.Task[None]:  # type: ignore[no-untyped-def]
        return spawn(coro, self._tasks, self._wake)

    def _wake(self) -> None:
        self._dirty = True

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

    def _required_projects(self, key: str) -> list[str]:
        assert self._queue is not None
        item = self._queue.item(key)
        return sorted({p for j in item.jobs for p in j.required_projects}) if item else []

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

    def _record_tested(self, key: str) -> None:
        """Remember what the item's builds tested before its submit is asked for: the review
        system announces the merge while the submit runs, and the publication that the
        announcement starts looks the gate's build up here. (Queue state only, no command:
        histories recorded before this replay unchanged.)"""
        assert self._queue is not None
        item = self._queue.item(key)
        record = tested_record(item, workflow.info().workflow_id,
                               workflow.now().timestamp()) if item is not None else None
        if record is not None:
            remember(self._queue.state, record)

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
            self._carry_out(follow_up)

    def _item_id(self, key: str) -> str:
        assert self._queue is not None
        item = self._queue.item(key)
        return item.id if item is not None else key

    async def _post(self, change, pipeline, action, message, labels, item_id) -> None:  # type: ignore[no-untyped-def]
        await workflow.execute_activity(
            "post_report",
            ReportRequest(change=change, pipeline=pipeline, action=action, message=message,
                          labels=labels, tag=f"{pipeline}:{item_id}:{action}"),
            result_type=ReportResult, task_queue=self._tq(Role.ORCHESTRATOR),
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_close_timeout=timedelta(hours=1), retry_policy=REPORT_RETRY,
        )

    def _tq(self, role: Role) -> str:
        assert self._input is not None
        return task_queue(self._input.state.task_queue_prefix, role)

