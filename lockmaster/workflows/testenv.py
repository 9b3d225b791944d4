"""The test-environment broker: one long-lived workflow per TE label (`te/<label>`) leasing that
label's TEs, across hosts, to jobs and people.

Decisions are the pure `Broker`'s; this workflow feeds it lease requests, renewals, releases,
operator commands and the TE hosts' answers, and carries out its actions on each TE host's own
task queue (`<prefix>-te-host/<host>`): authorize a holder's key, reset a TE. A TE's host
actions run one after another (an authorization never lands after the reset that follows it).

It continues as new whenever history grows long, without waiting for work in flight
(workflows/longlived.py): resets run in detached children that retry until the TE's host answers
(a TE whose host is down shows stuck, and blocks no other TE), authorizations still unanswered
are issued again by the next run.

Holders ask with the `lease` update (answered at once: "waiting", with their place in the queue
unless a TE is being prepared for them), poll the `lease_status` query until granted (the TE's
host accepts their key), and `renew` within their time-to-live. Operators: `status`, `drain`,
`undrain`, `force_release`, `unquarantine`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from lockmaster.leases.broker import Action, Authorize, Broker, Reset
    from lockmaster.model.audit import note_of
    from lockmaster.model.base import IdsQuery
    from lockmaster.model.testenv import (
        BrokerInput,
        BrokerStatus,
        BrokerStatusQuery,
        HostRef,
        LeaseRef,
        LeaseRequest,
        LeaseState,
        LeaseStatus,
        LeaseStatuses,
        OperatorAnswer,
        RenewLease,
        TEAuthorize,
        TEConfig,
        TEHostResult,
        TEKey,
        TEReset,
        TEState,
        TEView,
    )
    from lockmaster.model.work import Work, WorkDone, WorkOptions, stuck_views
    from lockmaster.workflows.details import broker_details
    from lockmaster.workflows.longlived import (
        LongLivedWorkflow,
        WorkTracker,
    )

AUTHORIZE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
# A reset is retried until it answers (a TE host that is down comes back); its answer decides
# between available and quarantined. Meanwhile the TE is handed to nobody.
RESET_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1),
                          maximum_interval=timedelta(seconds=60))


def te_host_queue(prefix: str, host: str) -> str:
    return f"{prefix}-te-host/{host}"


@workflow.defn(name="TEBrokerWorkflow")
class TEBrokerWorkflow(LongLivedWorkflow):
    @workflow.init
    def __init__(self, inp: BrokerInput) -> None:
        self._input = inp
        self._broker = Broker(inp.state)
        self._dirty = True
        self._draining = False
        # A run recorded before continue-as-new stopped draining replays as it ran (decided
        # here: signals sent with the start are handled before `run` begins).
        self._legacy = not workflow.patched("continue-without-draining")
        self._work = WorkTracker(inp.work, self._wake)
        self._work.on("reset", self._reset_finished)
        self._tasks: set[asyncio.Task[None]] = set()
        self._chains: dict[str, asyncio.Task[None]] = {}  # TE -> its last host action

    # --- holders -------------------------------------------------------------------------------

    @workflow.update(name="lease")
    def lease(self, request: LeaseRequest) -> LeaseStatus:
        """Answered at once (Temporal admits only a few updates in flight per workflow, so none
        waits here): "waiting" until the TE's host accepted the holder's key, then the holder's
        `lease_status` poll sees it granted."""
        lease = self._broker.request(request, self._now())
        if lease is not None:
            self._step()
            self._dirty = True
        return self._broker.status(request.id, self._now())

    @workflow.signal(name="request_lease")
    def request_lease(self, request: LeaseRequest) -> None:
        """How holders ask: a signal (no limit on how many arrive at once, unlike updates),
        then `lease_status` polls."""
        if request.id and request.public_key.strip():
            if self._broker.request(request, self._now()) is not None:
                self._dirty = True

    @lease.validator
    def _check_lease(self, request: LeaseRequest) -> None:
        if not request.id or not request.public_key.strip():
            raise ValueError("a lease request needs an id and the holder's public key")

    @workflow.query(name="lease_status")
    def lease_status(self, ref: LeaseRef) -> LeaseStatus:
        return self._broker.status(ref.id, self._now())

    @workflow.query(name="lease_statuses")
    def lease_statuses(self, query: IdsQuery) -> LeaseStatuses:
        """`lease_status` of many leases in one query: what a process's waiting holders share
        (lockmaster/temporal/status_watch.py), one query per round instead of one each."""
        return LeaseStatuses(statuses=self._broker.statuses(query.ids, self._now()))

    @workflow.update(name="renew")
    def renew(self, request: RenewLease) -> LeaseStatus:
        why = self._broker.renew(request.id, request.generation, request.ttl, self._now())
        self._dirty = True
        if why is not None:
            return LeaseStatus(id=request.id, state=LeaseState.ENDED, reason=why)
        return self._broker.status(request.id, self._now())

    @workflow.update(name="release")
    def release(self, ref: LeaseRef) -> OperatorAnswer:
        why, actions = self._broker.release(ref.id, ref.generation, self._now())
        self._carry_out(actions)
        self._dirty = True
        return OperatorAnswer(ok=why is None, message=why or f"lease {ref.id} released")

    # --- operators -----------------------------------------------------------------------------

    @workflow.query(name="status")
    def status(self, _: BrokerStatusQuery) -> BrokerStatus:
        state = self._input.state
        views = []
        for key, record in sorted(state.tes.items()):
            lease = state.leases.get(record.lease_id or "")
            views.append(TEView(
                key=key, host=record.spec.host, name=record.spec.name, state=record.state,
                generation=record.generation, holder=lease.holder if lease else None,
                lease_id=record.lease_id, expires=lease.expires if lease else None,
                reason=record.reason, operator=record.operator,
                operator_action=record.operator_action))
        waiting = sorted((w for w in state.leases.values() if w.state is LeaseState.WAITING
                          and w.te is None), key=lambda w: (w.precedence, w.arrived, w.id))
        return BrokerStatus(label=self._input.label, tes=views, waiting=waiting,
                            draining_hosts=list(state.draining),
                            drained_by=dict(state.drained_by),
                            stuck=stuck_views(self._input.work))

    @workflow.update(name="drain")
    def drain(self, ref: HostRef) -> OperatorAnswer:
        message = self._broker.drain(ref.host, note_of(ref.by, ref.reason, self._now()))
        self._dirty = True
        return OperatorAnswer(ok=True, message=message)

    @workflow.update(name="undrain")
    def undrain(self, ref: HostRef) -> OperatorAnswer:
        message = self._broker.undrain(ref.host)
        self._dirty = True
        return OperatorAnswer(ok=True, message=message)

    @workflow.update(name="force_release")
    def force_release(self, ref: TEKey) -> OperatorAnswer:
        why, actions = self._broker.force_release(
            ref.te, self._now(), note_of(ref.by, ref.reason, self._now()))
        self._carry_out(actions)
        self._dirty = True
        return OperatorAnswer(ok=why is None, message=why or f"TE {ref.te} released; resetting")

    @workflow.update(name="unquarantine")
    def unquarantine(self, ref: TEKey) -> OperatorAnswer:
        why, actions = self._broker.unquarantine(ref.te, note_of(ref.by, ref.reason,
                                                                 self._now()))
        self._carry_out(actions)
        self._dirty = True
        return OperatorAnswer(ok=why is None,
                              message=why or f"TE {ref.te} resetting; available if it succeeds")

    @workflow.signal(name="reconfigure")
    def reconfigure(self, config: TEConfig) -> None:
        self._input.tes = config.tes
        self._carry_out(self._broker.sync(config.tes))
        self._dirty = True

    # --- the loop ------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: BrokerInput) -> None:
        self._work.resume()
        self._carry_out(self._broker.sync(inp.tes))
        # TEs that were resetting when the last run continued as new: their reset goes on (a
        # detached child), or (a run recorded before) starts again.
        resetting = {w.context["te"] for w in self._work.in_flight("reset")}
        for key, record in inp.state.tes.items():
            if record.state is TEState.RESETTING and key not in self._chains and \
                    key not in resetting:
                self._carry_out([Reset(key, record.generation)])
        if not self._legacy:
            self._carry_out(self._broker.authorizing())
        while True:
            if not self._draining:
                self._step()
            await self._continue_when_due(inp, inp.max_history_events, legacy=self._legacy,
                                          tasks=self._tasks)
            # The Web UI's "Current details" (not a command).
            workflow.set_current_details(broker_details(self.status(BrokerStatusQuery()),
                                                        draining=self._draining))
            deadline = self._broker.next_deadline()
            timeout = None if deadline is None else \
                timedelta(seconds=max(0.01, deadline - self._now()))
            await self._sleep(timeout, self._continuing)

    def _step(self) -> None:
        if not self._draining:
            self._carry_out(self._broker.process(self._now()))

    # --- host actions, one after another per TE ------------------------------------------------

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            previous = self._chains.get(action.te)
            task = asyncio.ensure_future(self._after(previous, action))
            self._chains[action.te] = task
            self._tasks.add(task)

            def done(t: asyncio.Task[None], te: str = action.te) -> None:
                self._tasks.discard(t)
                if self._chains.get(te) is t:
                    del self._chains[te]
                self._dirty = True

            task.add_done_callback(done)

    async def _after(self, previous: asyncio.Task[None] | None, action: Action) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        if isinstance(action, Authorize):
            await self._authorize(action)
        elif self._legacy:
            await self._reset(action)
        else:
            await self._reset_detached(action)

    async def _authorize(self, action: Authorize) -> None:
        record = self._input.state.tes.get(action.te)
        lease = self._input.state.leases.get(action.lease_id)
        if record is None or lease is None or record.generation != action.generation:
            return  # ended before its turn
        try:
            result: TEHostResult = await workflow.execute_activity(
                "te_authorize", TEAuthorize(te=record.spec, generation=action.generation,
                                            public_key=lease.public_key),
                result_type=TEHostResult, task_queue=self._host_queue(record.spec.host),
                start_to_close_timeout=timedelta(seconds=30), retry_policy=AUTHORIZE_RETRY,
                summary=f"authorize {lease.holder} on {action.te} (generation "
                        f"{action.generation})",
            )
        except ActivityError as exc:
            result = TEHostResult(ok=False, error=str(exc.cause or exc))
        self._carry_out(self._broker.authorized(action.te, action.generation, result.ok,
                                                result.error, self._now()))

    async def _reset(self, action: Reset) -> None:
        record = self._input.state.tes.get(action.te)
        if record is None:
            return
        try:
            result: TEHostResult = await workflow.execute_activity(
                "te_reset", TEReset(te=record.spec, generation=action.generation),
                result_type=TEHostResult, task_queue=self._host_queue(record.spec.host),
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(seconds=self._input.reset_heartbeat_timeout),
                retry_policy=RESET_RETRY,
                summary=f"reset {action.te} after generation {action.generation}",
            )
        except ActivityError as exc:
            result = TEHostResult(ok=False, error=str(exc.cause or exc))
        self._broker.reset_done(action.te, action.generation, result.ok, result.error)

    async def _reset_detached(self, action: Reset) -> None:
        """Reset in a child that outlives this run and tries again until the TE's host answers
        (meanwhile the TE shows stuck); the next action on this TE waits for it."""
        record = self._input.state.tes.get(action.te)
        if record is None:
            return
        key = f"reset/{action.te}/{action.generation}"
        self._work.submit(Work(
            key=key, kind="reset", detached=True, persist=True,
            context={"te": action.te, "generation": action.generation},
            activity="te_reset",
            arg=TEReset(te=record.spec, generation=action.generation).model_dump(mode="json"),
            options=WorkOptions(
                task_queue=self._host_queue(record.spec.host), start_to_close=1800,
                heartbeat=self._input.reset_heartbeat_timeout,
                schedule_to_start=self._input.reset_pickup_timeout,
                maximum_attempts=1,  # the child retries, round after round
                round_pause=min(5.0, self._input.reset_retry_max),
                round_pause_max=self._input.reset_retry_max),
            summary=f"reset {action.te} after generation {action.generation}"))
        await workflow.wait_condition(lambda: key not in self._work.records)

    def _reset_finished(self, work: Work, done: WorkDone) -> None:
        if done.cancelled:
            return
        result = TEHostResult.model_validate(done.result) if done.ok and done.result else \
            TEHostResult(ok=False, error=done.error)
        self._broker.reset_done(work.context["te"], work.context["generation"], result.ok,
                                result.error)

    def _host_queue(self, host: str) -> str:
        return te_host_queue(self._input.task_queue_prefix, host)

    def _now(self) -> float:
        return workflow.now().timestamp()
