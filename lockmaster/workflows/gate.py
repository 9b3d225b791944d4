"""The gate (Zuul's dependent pipeline): one long-lived workflow per pipeline and shared queue,
`<pipeline>/<queue>` (e.g. `gate/integrated`).

The decisions are the pure `GateQueue` processor's; this workflow feeds it every outcome and
carries out its actions: merges and reports on the orchestrator queue, builds on the executor
queue, cancellations. Operators steer it with signals (enqueue, dequeue, promote, change-updated)
or updates (dequeue, promote: they answer what they did, or why they would do nothing) and read
it with the `status` query. It continues as new whenever history grows long, without waiting
for what is in flight (workflows/longlived.py; the actions as work: workflows/gate_work.py).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from lockmaster.model.audit import note_of
    from lockmaster.model.build import JobSpec
    from lockmaster.model.change import ChangeRef
    from lockmaster.model.gate import (
        ChangeUpdated,
        CommandResult,
        DequeueRequest,
        EnqueueRequest,
        GateInput,
        GateTestedAnswer,
        GateTestedQuery,
        PromoteRequest,
        QueueReconfigure,
        QueueStatus,
        StatusQuery,
    )
    from lockmaster.model.state import (
        DependencyRequest,
        DependencyResult,
        DependentsResult,
        PrepareStateRequest,
        PrepareStateResult,
    )
    from lockmaster.model.work import stuck_views
    from lockmaster.pipelines import gate_commands, gate_reconfigure
    from lockmaster.pipelines.gate_actions import (
        Action,
        ItemLabels,
    )
    from lockmaster.pipelines.gate_enqueue import Enqueuer, QueuePolicy
    from lockmaster.pipelines.gate_queue import GateQueue
    from lockmaster.pipelines.gate_tested import find_tested
    from lockmaster.pipelines.gate_updates import QueueUpdates
    from lockmaster.pipelines.gate_view import queue_status
    from lockmaster.temporal.task_queues import Role, task_queue
    from lockmaster.workflows.check import MERGER_RETRY
    from lockmaster.workflows.details import queue_details
    from lockmaster.workflows.gate_legacy import LegacyGateRun
    from lockmaster.workflows.gate_work import GateWork
    from lockmaster.workflows.longlived import (
        HISTORY_EVENTS,
        LongLivedWorkflow,
        WorkTracker,
        should_continue_as_new,
    )
    from lockmaster.workflows.recording import recording
    from lockmaster.workflows.tasks import spawn


DETAILS_EVERY = 1.0  # seconds: the current details' refresh while short work is in flight

Command = EnqueueRequest | DequeueRequest | PromoteRequest | ChangeUpdated | QueueReconfigure


def _numbers(changes: list[str]) -> list[int]:
    """The change numbers of `N` or `N,P` (anything else names no change)."""
    return [int(n) for n in (c.split(",")[0] for c in changes) if n.isdigit()]


def _refuse(reason: str | None) -> None:
    """An operator's update that would change nothing fails with the reason."""
    if reason is not None:
        raise ApplicationError(reason, non_retryable=True)


@workflow.defn(name="GateQueueWorkflow")
class GateQueueWorkflow(LongLivedWorkflow, GateWork, LegacyGateRun):
    @workflow.init
    def __init__(self, inp: GateInput) -> None:
        # Set here, not in `run`: signals sent with the start are handled before `run` begins.
        self._input: GateInput | None = inp
        self._queue: GateQueue | None = None
        self._enqueuer: Enqueuer | None = None
        self._updates: QueueUpdates | None = None
        self._dirty = True
        # A run recorded before continue-as-new stopped draining replays as it ran.
        self._legacy = not workflow.patched("continue-without-draining")
        self._work = WorkTracker(inp.work, self._wake)
        self._register_continuations()
        self._tasks: set[asyncio.Task[None]] = set()
        self._builds: dict[str, asyncio.Task[None]] = {}
        self._pending: list[Command] = []
        # Enqueue requests still being worked on, in the order they arrived (see _enqueue).
        self._enqueuing: list[int] = []
        self._enqueue_tickets = 0
        self._arrivals: dict[int, int] = {}  # ticket -> change number, of those enqueues
        self._arriving_requests: dict[int, EnqueueRequest] = {}
        self._details_at = 0.0  # when the current details were last rendered

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

    @workflow.signal(name="reconfigure")
    def reconfigure(self, change: QueueReconfigure) -> None:
        """The configuration changed (`lockmaster config apply`, a worker's SIGHUP): projects,
        requirements, window, labels now; items in flight keep their frozen job graphs."""
        self._pending.append(change)
        self._dirty = True

    @workflow.query(name="settings")
    def settings(self, _: StatusQuery) -> QueueReconfigure:
        """The configuration this queue runs with (`config apply` prints what it changes)."""
        assert self._input is not None
        return gate_reconfigure.current_settings(self._input)

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
        note = note_of(request.by, request.reason)
        said = f" ({note.describe('promoted')})" if note else ""
        return CommandResult(message=f"promoted {' '.join(request.changes)}{said}", order=order)

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
        busy = bool(self._tasks or self._pending or self._work.busy())
        status = queue_status(state, workflow.now().timestamp(),
                              idle=not state.items and not busy, busy=busy)
        status.stuck = stuck_views(self._work.records)
        return status

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
                            dequeue=inp.labels.dequeue, messages=dict(inp.labels.messages),
                            status_url=inp.labels.status_url)
        # Successful items at the head are submitted in batches, and every item's needed
        # changes are checked on each pass (versioned: histories recorded before replay as
        # they ran).
        batches = workflow.patched("submit-in-batches")
        # Whether this run records in the results database: asked once, here, in its first
        # workflow task (asked from results' handlers, replays under load disagreed with the
        # live run on it).
        self._recording = recording()
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
        if self._legacy:
            await self._legacy_loop(inp, queue)
            return
        self._work.resume()
        # Enqueues the last run was still looking at go first, in their order.
        for request in inp.arriving:
            self._admit(request)
        inp.arriving = []
        continuing = False
        while True:
            for command in self._take_pending():
                self._apply(command)
            self._run_all(queue.process(workflow.now().timestamp()))
            self._flush_records()  # a full batch of builds and buildsets: one activity
            continuing = continuing or should_continue_as_new(inp.max_history_events,
                                                              HISTORY_EVENTS)
            self._show_details(continuing)
            if continuing and workflow.all_handlers_finished():
                ready = await self._ready_to_continue()
                if ready is False:
                    continue  # something happened meanwhile: decide on it first
            else:
                ready = None
            if ready:
                # Nothing to wait for: work in flight is in `inp.work`, enqueues still being
                # looked at go in `inp.arriving`.
                inp.arriving = [self._arriving_requests[t] for t in self._enqueuing
                                if t in self._arriving_requests]
                self._flush_records(force=True)  # (the next run issues it)
                workflow.continue_as_new(inp)
            await self._sleep(self._records_wait(), continuing)

    def _show_details(self, continuing: bool) -> None:
        """The Web UI's "Current details": the queue, every item and job (metadata, not a
        command). Rendering the whole queue is most of a busy queue's workflow-task time: while
        short work (merges, reports) is in flight its end wakes the loop again soon, so render
        at most once a second then; and not in the task that continues as new."""
        if workflow.unsafe.is_replaying():
            return  # metadata, not a command: a replay (a whole run, after a refusal) skips it
        now = workflow.now().timestamp()
        short = bool(self._tasks or self._pending) or any(
            not w.detached for w in self._work.in_flight())
        if continuing or (short and now - self._details_at < DETAILS_EVERY):
            return
        self._details_at = now
        workflow.set_current_details(queue_details(self.status(StatusQuery())))

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
            self._admit(command)
        elif isinstance(command, DequeueRequest):
            self._run_all(self._updates.dequeue(command))
        elif isinstance(command, PromoteRequest):
            queue.promote(command.changes, note_of(command.by, command.reason,
                                                   workflow.now().timestamp()))
        elif isinstance(command, QueueReconfigure):
            assert self._input is not None
            self._run_all(gate_reconfigure.reconfigure(self._input, self._updates, command))
        else:
            self._run_all(self._updates.change_updated(command, workflow.now().timestamp()))

    def _admit(self, request: EnqueueRequest) -> None:
        """Look the change's dependencies up, then enqueue it in its turn."""
        assert self._queue is not None
        if self._queue.find_number(request.change.number) is None:
            self._enqueue_tickets += 1
            self._enqueuing.append(self._enqueue_tickets)
            self._arrivals[self._enqueue_tickets] = request.change.number
            self._arriving_requests[self._enqueue_tickets] = request
            self._spawn(self._enqueue(request, self._enqueue_tickets))

    async def _enqueue(self, request: EnqueueRequest, ticket: int) -> None:
        try:
            await self._enqueue_in_turn(request, ticket)
        finally:
            self._enqueuing.remove(ticket)
            self._arrivals.pop(ticket, None)
            self._arriving_requests.pop(ticket, None)

    async def _enqueue_in_turn(self, request: EnqueueRequest, ticket: int) -> None:
        """Enqueue behind the changes it needs; wait unreported while one is neither merged nor
        in the queue; refuse (with a report) what can never be gated here."""
        assert self._queue is not None and self._input is not None
        queue = self._queue
        # While the dependencies are read, merge the change onto what it will most likely be
        # tested on (the queue's tail): the usual case, a change needing nothing outside the
        # queue, then starts its jobs one merger round trip sooner. (Versioned.)
        assert self._enqueuer is not None
        premerge: asyncio.Task[tuple[list[ChangeRef], PrepareStateResult] | None] | None = None
        if workflow.patched("merge-while-resolving-dependencies"):
            changes = self._enqueuer.premerge(request)
            if changes is not None:
                premerge = asyncio.ensure_future(self._premerge(changes, request.jobs))
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
        before = {item.change.number for item in queue.items}
        self._run_all(self._enqueuer.request(request, deps, workflow.now().timestamp(),
                                             prepared=prepared))
        entered = [item.change for item in queue.items if item.change.number not in before]
        # Zuul enqueues the approved changes needing those that entered right behind them, in
        # the same event (versioned: histories recorded before replay as they ran).
        if entered and workflow.patched("enqueue-dependents-behind"):
            await self._enqueue_behind(request, entered)

    async def _enqueue_behind(self, request: EnqueueRequest, entered: list[ChangeRef]) -> None:
        assert self._enqueuer is not None
        try:
            result: DependentsResult = await workflow.execute_activity(
                "find_dependents", self._enqueuer.dependents_request(entered),
                result_type=DependentsResult, task_queue=self._tq(Role.ORCHESTRATOR),
                start_to_close_timeout=timedelta(minutes=5), retry_policy=MERGER_RETRY,
            )
        except ActivityError as exc:
            # They still enter on their own next event; the queue goes on deciding.
            workflow.logger.warning("changes needing %s not looked up: %s",
                                    ", ".join(c.key for c in entered), exc.cause or exc)
            return
        for follower, deps in self._enqueuer.followers(request, result):
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
        if not self._legacy:
            self._carry_out_all(actions)
            return
        for action in actions:
            self._legacy_carry_out(action)

    def _spawn(self, coro) -> asyncio.Task[None]:  # type: ignore[no-untyped-def]
        return spawn(coro, self._tasks, self._wake)

    def _tq(self, role: Role) -> str:
        assert self._input is not None
        return task_queue(self._input.state.task_queue_prefix, role)
