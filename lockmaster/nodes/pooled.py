"""Nodes from the node pool workflows: what the executor uses in a deployment.

A build asks one pool for its whole nodeset (the `submit_request` signal), waits while the pool
launches, renews its lease while it holds the request, and returns the nodes when the job ends.
While they wait, every build of this process on one pool shares one `request_statuses` query
per round (lockmaster/temporal/status_watch.py; queries add nothing to the history): 200
builds waiting on one pool cost it one query every 0.2-5 s, not 200 queries a second.
A pool that declines (unknown label, disabled, launches that kept failing) passes the request to
the next pool serving the labels; when none is left the build gets NODE_FAILURE.

The pool hands over where the node is (host, port, user, host key); the SSH private key is read
from this executor's configuration, never from the workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from pathlib import Path

from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from lockmaster.config.models import LockmasterConfig, OpenStackProvider, StaticNode
from lockmaster.config.models import StaticProvider as StaticProviderConfig
from lockmaster.model.build import NodeInfo
from lockmaster.model.nodes import (
    AutoholdClaim,
    AutoholdClaimResult,
    Driver,
    NodeRequest,
    NodeRequestStatus,
    NodeRequestStatuses,
    PoolSpec,
    RenewRequests,
    RequestState,
    RequestStatusQuery,
    ReturnNodes,
)
from lockmaster.model.nodes import Node as PoolNode
from lockmaster.nodepool.specs import AUTOHOLD_ID, pool_id, pool_specs
from lockmaster.nodes.base import Node, NodeError, Nodeset
from lockmaster.nodes.local import LocalNode, check_build_id
from lockmaster.nodes.static import SSHNode, connect
from lockmaster.temporal.status_watch import StatusWatch, batched_query, shared_watch

log = logging.getLogger(__name__)

RESUBMIT_AFTER = 5.0  # a request the pool has not taken in by then is sent again
# Executors ask with a signal and wait on a query (no updates: Temporal admits only 10 updates in
# flight per workflow, and a burst of builds past that had updates refused and aborted en masse
# and the pool's workflow tasks timing out; bench/nodepool_latency.py, docs/benchmarks.md).
# The query is shared (status_watch.py): a request is first looked at WATCH_JOIN after it is
# sent, then each round makes the wait 1.5 times longer, up to WATCH_MAX while no answer
# changes and at most WATCH_FIRST after one did. A pool asked by many builds at once is busy,
# not gone: it refuses queries beyond the few it buffers while a workflow task runs
# (RESOURCE_EXHAUSTED), or a query times out; the watch asks again quietly for up to
# BUSY_TIMEOUT.
WATCH_JOIN = 0.02
WATCH_FIRST = 0.2
WATCH_MAX = 5.0
BUSY_TIMEOUT = 120.0
WORK_DIR = "/tmp/lockmaster"
AUTOHOLD_TIMEOUT = 10.0


class PooledNodes:
    """Asks the pool workflows for nodesets on behalf of builds (one per executor process)."""

    def __init__(self, client: Client, config: LockmasterConfig, state_dir: Path) -> None:
        self.client = client
        self.prefix = config.temporal.workflow_id_prefix
        self.lease = config.nodes.lease_timeout
        self.state_dir = state_dir
        self.specs = pool_specs(config)
        self._keys = _key_files(config)
        self._work_dirs = _work_dirs(config)
        self._held: dict[str, tuple[PoolSpec, str]] = {}  # request id -> (pool, request id)
        self._renewer: asyncio.Task[None] | None = None

    def pools_for(self, labels: list[str]) -> list[PoolSpec]:
        return [s for s in self.specs if all(label in s.labels for label in labels)]

    # --- asking --------------------------------------------------------------------------------

    async def acquire_nodeset(self, labels: list[str], request_id: str, *, precedence: int = 1,
                              position: int = 0, holder: str = "",
                              arrived: float | None = None) -> Nodeset:
        check_build_id(request_id)
        pools = self.pools_for(labels)
        if not pools:
            served = sorted({label for s in self.specs for label in s.labels})
            raise NodeError(f"no node pool serves the nodeset {labels}"
                            + (f" (labels served: {', '.join(served)})" if served else ""))
        reasons: list[str] = []
        for spec in pools:
            request = NodeRequest(id=request_id, labels=labels, precedence=precedence,
                                  position=position, holder=holder, lease_seconds=self.lease,
                                  arrived=arrived or 0.0)
            status = await self._ask(spec, request)
            if status.state is RequestState.FULFILLED:
                return await self._take(spec, request_id, status)
            reasons.append(f"{spec.provider}/{spec.pool}: {status.reason or status.state.value}")
        raise NodeError("no pool could provide nodes: " + "; ".join(reasons))

    async def _ask(self, spec: PoolSpec, request: NodeRequest) -> NodeRequestStatus:
        handle = self._pool(spec)
        self._held[request.id] = (spec, request.id)
        self._ensure_renewer()
        try:
            await self._submit(handle, request)
            status = NodeRequestStatus(id=request.id, state=RequestState.PENDING)
            seen = False
            asked = time.monotonic()
            with self._watch(handle).watch(request.id) as waiter:
                while status.state is RequestState.PENDING:
                    status = await waiter.next()
                    if status.state is RequestState.GONE:
                        # Not taken in yet (the signal is served by the pool's next workflow
                        # task), or lost (the pool continued as new, or our lease ran out while
                        # this process stalled): ask again with the same id after a while.
                        if seen or time.monotonic() - asked > RESUBMIT_AFTER:
                            await self._submit(handle, request)
                            seen, asked = False, time.monotonic()
                            waiter.again()
                        status = NodeRequestStatus(id=request.id, state=RequestState.PENDING)
                    else:
                        seen = True
            if status.state is not RequestState.FULFILLED:
                await self._withdraw(spec, request.id)
            return status
        except BaseException:
            # Cancelled while waiting (the build was cancelled): withdraw, never leave it.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._withdraw(spec, request.id))
            raise

    def _watch(self, handle: WorkflowHandle) -> StatusWatch[NodeRequestStatus]:
        """The one watch of this process on this pool (every PooledNodes of one client)."""
        return shared_watch(("request_statuses", self.client, handle.id), lambda: StatusWatch(
            f"node pool {handle.id}",
            batched_query(handle, "request_statuses", "request_status",
                          lambda i: RequestStatusQuery(id=i), NodeRequestStatus,
                          NodeRequestStatuses),
            first=WATCH_FIRST, max_interval=WATCH_MAX, join_delay=WATCH_JOIN,
            give_up=BUSY_TIMEOUT))

    async def _submit(self, handle: WorkflowHandle, request: NodeRequest) -> None:
        try:
            await handle.signal("submit_request", request)
        except RPCError as exc:
            raise NodeError(f"node pool {handle.id} is not reachable: {exc}") from exc

    async def _take(self, spec: PoolSpec, request_id: str, status: NodeRequestStatus) -> Nodeset:
        nodeset = Nodeset(request_id=request_id, origin=spec)
        try:
            for index, node in enumerate(status.nodes):
                name = request_id if index == 0 else f"{request_id}-{index}"
                nodeset.nodes.append(await self._connect(spec, node, name))
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.release_nodeset(nodeset))
            raise
        return nodeset

    async def _connect(self, spec: PoolSpec, node: PoolNode, workspace: str) -> Node:
        info = NodeInfo(provider=spec.provider, name=node.static_node or node.id,
                        label=node.label or node.labels[0], host=node.host or "localhost")
        if spec.driver is Driver.LOCAL:
            root = self.state_dir / "nodes" / spec.provider / workspace
            try:
                await asyncio.to_thread(_fresh_dir, root)
            except OSError as exc:
                raise NodeError(f"cannot create workspace {root}: {exc}") from exc
            return LocalNode(info, root)
        key = self._keys.get((spec.provider, node.static_node or ""))
        if key is None:
            raise NodeError(f"provider {spec.provider!r} has no key-file configured on this "
                            "executor: set key-file for it in lockmaster.yaml")
        if not node.host or not node.host_key or not node.username:
            raise NodeError(f"node {node.id} of {spec.provider}/{spec.pool} has no address or "
                            "host key yet")
        work_dir = self._work_dirs.get((spec.provider, node.static_node or ""), WORK_DIR)
        target = StaticNode(name=f"{spec.provider}/{node.id}", host=node.host, port=node.port,
                            username=node.username, key_file=key, host_key=node.host_key,
                            labels=list(node.labels), work_dir=work_dir)
        conn = await connect(target)
        return SSHNode(info, conn, work_dir, workspace)

    # --- giving back ---------------------------------------------------------------------------

    async def release_nodeset(self, nodeset: Nodeset, *, hold_until: float | None = None,
                              hold_reason: str | None = None) -> None:
        for node in nodeset.nodes:
            if isinstance(node, SSHNode):
                await node.close()
        await self._withdraw(nodeset.origin, nodeset.request_id, hold_until, hold_reason)

    async def _withdraw(self, spec: PoolSpec, request_id: str, hold_until: float | None = None,
                        hold_reason: str | None = None) -> None:
        self._held.pop(request_id, None)
        ret = ReturnNodes(request_id=request_id, hold_until=hold_until, hold_reason=hold_reason)
        await self._pool(spec).signal("return_nodes", ret)

    async def autohold_until(self, nodeset: Nodeset, project: str, job: str, change: int
                             ) -> tuple[float, str] | None:
        """Whether an operator asked to keep the nodes of this failing build (claims one of the
        autohold's count). Slots are never held."""
        if nodeset.origin is None or nodeset.origin.driver is not Driver.OPENSTACK:
            return None
        claim = await self.claim_autohold(project, job, change)
        if not claim.held or claim.hold_until is None:
            return None
        return claim.hold_until, claim.reason or "autohold"

    async def claim_autohold(self, project: str, job: str, change: int) -> AutoholdClaimResult:
        handle = self.client.get_workflow_handle(self.prefix + AUTOHOLD_ID)
        try:
            # Bounded: a build's nodes must not wait on an autohold list nobody serves.
            return await asyncio.wait_for(handle.execute_update(
                "claim", AutoholdClaim(project=project, job=job, change=change),
                result_type=AutoholdClaimResult), AUTOHOLD_TIMEOUT)
        except (RPCError, TimeoutError):
            return AutoholdClaimResult(held=False)  # no autohold workflow: nobody asked

    # --- leases --------------------------------------------------------------------------------

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        """Every quarter lease, renew every request this process holds (one signal per pool)."""
        while self._held:
            await asyncio.sleep(self.lease / 4)
            by_pool: dict[str, tuple[PoolSpec, list[str]]] = {}
            for spec, request_id in list(self._held.values()):
                key = pool_id(spec.provider, spec.pool)
                by_pool.setdefault(key, (spec, []))[1].append(request_id)
            for spec, ids in by_pool.values():
                try:
                    async with asyncio.timeout(self.lease / 4):
                        await self._pool(spec).signal("renew", RenewRequests(ids=ids))
                except Exception as exc:  # the next round tries again
                    log.warning("renewing node requests in %s/%s failed: %s",
                                spec.provider, spec.pool, exc)

    def _pool(self, spec: PoolSpec) -> WorkflowHandle:
        return self.client.get_workflow_handle(self.prefix + pool_id(spec.provider, spec.pool))


def _key_files(config: LockmasterConfig) -> dict[tuple[str, str], Path]:
    """(provider, static node name or "") -> private key path, resolved against the config."""
    keys: dict[tuple[str, str], Path] = {}
    for provider in config.nodes.providers:
        if isinstance(provider, OpenStackProvider) and provider.key_file is not None:
            keys[(provider.name, "")] = config.resolve(provider.key_file)
        elif isinstance(provider, StaticProviderConfig):
            for pool in provider.pools:
                for node in pool.nodes:
                    keys[(provider.name, node.name)] = config.resolve(node.key_file)
    return keys


def _work_dirs(config: LockmasterConfig) -> dict[tuple[str, str], str]:
    dirs: dict[tuple[str, str], str] = {}
    for provider in config.nodes.providers:
        if isinstance(provider, StaticProviderConfig):
            for pool in provider.pools:
                for node in pool.nodes:
                    dirs[(provider.name, node.name)] = node.work_dir
    return dirs


def _fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
