"""One node pool (`nodepool/<provider>/<pool>`): a long-lived workflow that serves node requests.

The decisions are the pure `Allocator`'s; this workflow feeds it requests, renewals, returns,
launch outcomes and cleanup scans, and carries out what it decides: launches, deletions and leak
deletions as activities on the launcher task queue. Requesters (executors) ask with the
`request_nodes` update (answered at once: fulfilled from ready nodes, pending, or declined),
poll `request_status`, `renew` their lease and `return_nodes`. Operators use `status`,
`hold_node`, `delete_node` and `set_enabled`. It continues as new whenever history grows long,
without waiting for work in flight (workflows/longlived.py): launches run in detached children
that outlive the run, deletions still in flight are issued again from the carried state.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from lockmaster.model.base import IdsQuery
    from lockmaster.model.nodes import (
        DeleteNode,
        DeleteServerRequest,
        DeleteServerResult,
        Driver,
        HoldNode,
        LaunchRequest,
        LaunchResult,
        NodeRequest,
        NodeRequestStatus,
        NodeRequestStatuses,
        NodeState,
        OperatorResult,
        PoolInput,
        PoolSpec,
        PoolStatus,
        PoolStatusQuery,
        RenewRequests,
        RequestState,
        RequestStatusQuery,
        ReturnNodes,
        ScanRequest,
        ScanResult,
        SetEnabled,
    )
    from lockmaster.model.work import Work, WorkDone, WorkOptions, stuck_views
    from lockmaster.nodepool.allocator import (
        Action,
        Allocator,
        Delete,
        DeleteLeak,
        Launch,
        sync_slots,
    )
    from lockmaster.nodepool.marks import server_name
    from lockmaster.temporal.task_queues import Role, task_queue
    from lockmaster.workflows.details import pool_details
    from lockmaster.workflows.longlived import (
        LongLivedWorkflow,
        WorkTracker,
    )
    from lockmaster.workflows.tasks import spawn
    from lockmaster.workflows.work_options import retry_fields

# A launch retried after its worker died finds the server it created (idempotent by name).
LAUNCH_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
DELETE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5,
                           maximum_interval=timedelta(seconds=30))
SCAN_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=2)


@workflow.defn(name="NodePoolWorkflow")
class NodePoolWorkflow(LongLivedWorkflow):
    @workflow.init
    def __init__(self, inp: PoolInput) -> None:
        # Set here, not in `run`: a signal sent with the start is handled before `run` begins.
        self._input: PoolInput | None = inp
        self._alloc: Allocator | None = None
        self._dirty = True
        self._draining = False
        # A run recorded before continue-as-new stopped draining replays as it ran (decided
        # here: signals sent with the start are handled before `run` begins).
        self._legacy = not workflow.patched("continue-without-draining")
        self._work = WorkTracker(inp.work, self._wake)
        self._work.on("launch", self._launched)
        self._tasks: set[asyncio.Task[None]] = set()
        self._deleting: set[str] = set()  # node ids with a delete in flight
        self._launching: set[str] = set()
        self._scanning = False

    # --- requesters ----------------------------------------------------------------------------

    @workflow.signal(name="submit_request")
    def submit_request(self, request: NodeRequest) -> None:
        """How executors ask: a signal (no limit on how many arrive at once, unlike updates),
        then `request_status` polls. The main loop serves it."""
        if not request.id or request.lease_seconds <= 0:
            return  # malformed: the requester's poll finds it gone
        taken = self._allocator().submit(request, self._now())
        if taken.state is RequestState.DECLINED:
            # Kept (until withdrawn or its lease ends) so the requester's poll reads why.
            self._allocator().state.requests[taken.id] = taken
        self._dirty = True

    @workflow.update(name="request_nodes")
    def request_nodes(self, request: NodeRequest) -> NodeRequestStatus:
        """The same as a single call that answers at once when ready nodes exist (operators,
        the `temporal` CLI); executors use `submit_request`."""
        alloc = self._allocator()
        now = self._now()
        taken = alloc.submit(request, now)
        if taken.state is RequestState.PENDING and not self._draining:
            self._carry_out(alloc.process(now))
        return self._request_status(taken.id) if taken.id in alloc.state.requests else \
            NodeRequestStatus(id=taken.id, state=taken.state, reason=taken.reason)

    @request_nodes.validator
    def _check_request(self, request: NodeRequest) -> None:
        if not request.id:
            raise ValueError("a node request needs an id")
        if request.lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")

    @workflow.query(name="request_status")
    def request_status(self, query: RequestStatusQuery) -> NodeRequestStatus:
        return self._request_status(query.id)

    @workflow.query(name="request_statuses")
    def request_statuses(self, query: IdsQuery) -> NodeRequestStatuses:
        """`request_status` of many requests in one query: what an executor's waiting builds
        share (lockmaster/temporal/status_watch.py), one query per round instead of one each."""
        return NodeRequestStatuses(statuses=[self._request_status(i) for i in query.ids])

    @workflow.signal(name="renew")
    def renew(self, renewal: RenewRequests) -> None:
        self._allocator().renew(renewal.ids, self._now())
        self._dirty = True

    @workflow.signal(name="return_nodes")
    def return_nodes(self, ret: ReturnNodes) -> None:
        self._carry_out(self._allocator().give_back(ret, self._now()))
        self._dirty = True

    # --- operators -----------------------------------------------------------------------------

    @workflow.query(name="status")
    def status(self, _: PoolStatusQuery) -> PoolStatus:
        assert self._input is not None
        spec, state = self._input.spec, self._input.state
        return PoolStatus(
            provider=spec.provider, pool=spec.pool, driver=spec.driver, enabled=state.enabled,
            max_servers=spec.max_servers, nodes=list(state.nodes.values()),
            requests=list(state.requests.values()), paused_until=state.paused_until,
            leak_suspects=list(state.leak_suspects), launches=state.launches,
            launch_failures=state.launch_failures, leaks_deleted=state.leaks_deleted,
            stuck=stuck_views(self._input.work),
            disabled_reason=state.disabled_reason, disabled_by=state.disabled_by,
        )

    @workflow.update(name="hold_node")
    def hold_node(self, hold: HoldNode) -> OperatorResult:
        error = self._allocator().hold(hold.node_id, hold.hold_until, hold.reason, self._now(),
                                       by=hold.by)
        self._dirty = True
        return OperatorResult(ok=error is None, message=error or f"node {hold.node_id} held")

    @workflow.update(name="delete_node")
    def delete_node(self, delete: DeleteNode) -> OperatorResult:
        error, actions = self._allocator().delete(delete.node_id, self._now())
        self._carry_out(actions)
        self._dirty = True
        return OperatorResult(ok=error is None,
                              message=error or f"node {delete.node_id} is being deleted")

    @workflow.update(name="set_enabled")
    def set_enabled(self, request: SetEnabled) -> OperatorResult:
        assert self._input is not None
        self._allocator().set_enabled(request.enabled, request.reason, request.by)
        self._dirty = True
        spec = self._input.spec
        what = "enabled" if request.enabled else "disabled: no new launches, nodes in use finish"
        return OperatorResult(ok=True, message=f"pool {spec.provider}/{spec.pool} {what}")

    @workflow.signal(name="reconfigure")
    def reconfigure(self, spec: PoolSpec) -> None:
        """The configuration changed (sent by every worker start): limits, labels, slots."""
        assert self._input is not None
        old = self._input.spec
        # Sizes come from the cloud (flavors): keep what was learnt until the next scan.
        for name, label in spec.labels.items():
            if name in old.labels and label.flavor == old.labels[name].flavor:
                label.cores, label.ram = old.labels[name].cores, old.labels[name].ram
        self._input.spec = spec
        self._alloc = Allocator(spec, self._input.state)
        sync_slots(spec, self._input.state)
        self._dirty = True

    # --- the loop ------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: PoolInput) -> None:
        self._input = inp
        sync_slots(inp.spec, inp.state)
        alloc = self._allocator()
        cloud = inp.spec.driver is Driver.OPENSTACK
        # Launches in flight when the last run continued as new go on in their children;
        # deletions start again (they are idempotent).
        self._work.resume()
        self._carry_out([Delete(n) for n in _deleting(inp)])
        while True:
            now = self._now()
            if cloud and not self._scanning and not self._draining and (
                    now - inp.state.last_cleanup >= inp.spec.cleanup_interval):
                inp.state.last_cleanup = now
                self._scanning = True
                self._spawn(self._scan())
            if not self._draining:
                self._carry_out(alloc.process(now))

            def rescan(at: float = now) -> None:
                if self._scanning:  # cut short: the next run scans at once
                    inp.state.last_cleanup = at - inp.spec.cleanup_interval

            await self._continue_when_due(inp, inp.max_history_events, legacy=self._legacy,
                                          tasks=self._tasks, before=rescan)
            # The Web UI's "Current details" (not a command).
            workflow.set_current_details(pool_details(
                self.status(PoolStatusQuery()), disabled_reason=inp.state.disabled_reason,
                now=now))
            await self._sleep(self._next_wake(now), self._continuing)
            alloc = self._allocator()

    def _next_wake(self, now: float) -> timedelta | None:
        assert self._input is not None
        deadlines = []
        if (deadline := self._allocator().next_deadline()) is not None:
            deadlines.append(deadline)
        if self._input.spec.driver is Driver.OPENSTACK:
            deadlines.append(self._input.state.last_cleanup + self._input.spec.cleanup_interval)
        if not deadlines:
            return None
        return timedelta(seconds=max(0.01, min(deadlines) - now))

    # --- actions -------------------------------------------------------------------------------

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Launch) and not self._legacy:
                self._submit_launch(action.node_id)
            elif isinstance(action, Launch):
                if action.node_id not in self._launching:
                    self._launching.add(action.node_id)
                    self._spawn(self._launch(action.node_id))
            elif isinstance(action, Delete):
                if action.node_id not in self._deleting:
                    self._deleting.add(action.node_id)
                    self._spawn(self._delete(action.node_id))
            elif isinstance(action, DeleteLeak):
                self._spawn(self._delete_leak(action))

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        spawn(coro, self._tasks, self._wake)

    def _submit_launch(self, node_id: str) -> None:
        assert self._input is not None
        spec = self._input.spec
        node = self._input.state.nodes.get(node_id)
        if node is None:
            return
        self._work.submit(Work(
            key=f"launch/{node_id}", kind="launch", detached=True, context={"node_id": node_id},
            activity="launch_node", arg=LaunchRequest(spec=spec, node=node).model_dump(mode="json"),
            options=WorkOptions(task_queue=self._tq(Role.LAUNCHER),
                                start_to_close=spec.launch_timeout + spec.boot_timeout + 300,
                                heartbeat=spec.heartbeat_timeout, **retry_fields(LAUNCH_RETRY)),
            summary=f"launch {node.labels[0]} node {node_id} in {spec.provider}/{spec.pool}"))

    def _launched(self, work: Work, done: WorkDone) -> None:
        node_id = work.context["node_id"]
        if done.ok and done.result is not None:
            result = LaunchResult.model_validate(done.result)
        else:
            result = LaunchResult(node_id=node_id, ok=False,
                                  error=f"the launcher failed: {done.error}")
        self._launch_outcome(node_id, result)

    async def _launch(self, node_id: str) -> None:
        assert self._input is not None
        spec = self._input.spec
        try:
            node = self._input.state.nodes.get(node_id)
            if node is None:
                return
            try:
                result: LaunchResult = await workflow.execute_activity(
                    "launch_node", LaunchRequest(spec=spec, node=node),
                    result_type=LaunchResult, task_queue=self._tq(Role.LAUNCHER),
                    start_to_close_timeout=timedelta(
                        seconds=spec.launch_timeout + spec.boot_timeout + 300),
                    heartbeat_timeout=self._heartbeat(), retry_policy=LAUNCH_RETRY,
                    summary=f"launch {node.labels[0]} node {node_id} in "
                            f"{spec.provider}/{spec.pool}",
                )
            except ActivityError as exc:
                result = LaunchResult(node_id=node_id, ok=False,
                                      error=f"the launcher failed: {exc.cause or exc}")
        finally:
            self._launching.discard(node_id)
        self._launch_outcome(node_id, result)

    def _launch_outcome(self, node_id: str, result: LaunchResult) -> None:
        alloc, now = self._allocator(), self._now()
        if result.ok:
            self._carry_out(alloc.launched(
                node_id, external_id=result.external_id, host=result.host, port=result.port,
                host_key=result.host_key, floating_ip_id=result.floating_ip_id, now=now))
        else:
            self._carry_out(alloc.launch_failed(node_id, quota=result.quota,
                                                error=result.error or "unknown error", now=now))

    async def _delete(self, node_id: str) -> None:
        assert self._input is not None
        spec = self._input.spec
        node = self._input.state.nodes.get(node_id)
        try:
            if node is None:
                return
            if spec.driver is Driver.OPENSTACK:
                result = await self._delete_activity(DeleteServerRequest(
                    spec=spec, node_id=node_id, external_id=node.external_id,
                    floating_ip_id=node.floating_ip_id,
                    server_name=None if node.external_id else server_name(spec, node_id,
                                                                          node.launch_attempt),
                ), f"delete node {node_id}")
                if not result.ok:
                    return  # stays deleting; the next cleanup pass tries again
            self._allocator().deleted(node_id)
        finally:
            self._deleting.discard(node_id)

    async def _delete_leak(self, action: DeleteLeak) -> None:
        assert self._input is not None
        what = f"server {action.server_id}" if action.server_id else \
            f"floating IP {action.floating_ip_id}"
        await self._delete_activity(DeleteServerRequest(
            spec=self._input.spec, external_id=action.server_id,
            floating_ip_id=action.floating_ip_id), f"delete leaked {what}")

    async def _delete_activity(self, request: DeleteServerRequest, summary: str
                               ) -> DeleteServerResult:
        try:
            return await workflow.execute_activity(
                "delete_server", request, result_type=DeleteServerResult,
                task_queue=self._tq(Role.LAUNCHER), start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=self._heartbeat(), retry_policy=DELETE_RETRY, summary=summary,
            )
        except ActivityError as exc:
            return DeleteServerResult(ok=False, error=str(exc.cause or exc))

    async def _scan(self) -> None:
        assert self._input is not None
        try:
            result: ScanResult = await workflow.execute_activity(
                "scan_pool", ScanRequest(spec=self._input.spec), result_type=ScanResult,
                task_queue=self._tq(Role.LAUNCHER), start_to_close_timeout=timedelta(minutes=5),
                retry_policy=SCAN_RETRY,
                summary=f"scan {self._input.spec.provider}/{self._input.spec.pool}",
            )
        except ActivityError:
            return
        finally:
            self._scanning = False
        if result.error:
            return
        spec, state = self._input.spec, self._input.state
        state.headroom = result.headroom
        for label, (cores, ram) in result.label_sizes.items():
            if label in spec.labels:
                spec.labels[label].cores, spec.labels[label].ram = cores, ram
        alloc = self._allocator()
        self._carry_out(alloc.scan(result.servers, result.floating_ips))
        # Deletions that failed earlier: try again.
        self._carry_out([Delete(n) for n in _deleting(self._input)])

    # --- helpers -------------------------------------------------------------------------------

    def _allocator(self) -> Allocator:
        assert self._input is not None
        if self._alloc is None:
            self._alloc = Allocator(self._input.spec, self._input.state)
        return self._alloc

    def _request_status(self, request_id: str) -> NodeRequestStatus:
        assert self._input is not None
        state = self._input.state
        request = state.requests.get(request_id)
        if request is None:
            return NodeRequestStatus(id=request_id, state=RequestState.GONE)
        nodes = [state.nodes[n] for n in request.nodes if n in state.nodes] \
            if request.state is RequestState.FULFILLED else []
        return NodeRequestStatus(id=request.id, state=request.state, nodes=nodes,
                                 reason=request.reason)

    def _heartbeat(self) -> timedelta:
        assert self._input is not None
        return timedelta(seconds=self._input.spec.heartbeat_timeout)

    def _now(self) -> float:
        return workflow.now().timestamp()

    def _tq(self, role: Role) -> str:
        assert self._input is not None
        return task_queue(self._input.task_queue_prefix, role)


def _deleting(inp: PoolInput) -> list[str]:
    return [n.id for n in inp.state.nodes.values() if n.state is NodeState.DELETING]
