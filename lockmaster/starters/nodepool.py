"""Starting and steering the node pools: one workflow per provider pool (`nodepool/<provider>/
<pool>`) and the autohold list (`nodepool/autoholds`). Every operator command is a signal,
update or query on them, so the `temporal` CLI can do the same, e.g.

    temporal workflow query --workflow-id nodepool/cloud1/main --name status --input '{}'
    temporal workflow update execute --workflow-id nodepool/cloud1/main --name set_enabled \\
        --input '{"enabled": false, "reason": "maintenance"}'
"""

from __future__ import annotations

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.nodes import (
    Autohold,
    AutoholdDelete,
    AutoholdInput,
    AutoholdList,
    AutoholdListQuery,
    DeleteNode,
    HoldNode,
    OperatorResult,
    PoolInput,
    PoolSpec,
    PoolStatus,
    PoolStatusQuery,
    SetEnabled,
)
from lockmaster.nodepool.specs import AUTOHOLD_ID, pool_id, pool_specs
from lockmaster.temporal import search_attributes
from lockmaster.temporal.task_queues import Role, task_queue
from lockmaster.workflows.autohold import AutoholdWorkflow
from lockmaster.workflows.nodepool import NodePoolWorkflow


class PoolError(Exception):
    """An operator command that cannot be carried out (unknown provider, node, ...)."""


async def ensure_pools(client: Client, config: LockmasterConfig,
                       *, max_history_events: int | None = None) -> list[str]:
    """Start every configured pool's workflow if it is not running, and send it the current
    configuration; start the autohold list. Returns the pool workflow ids."""
    prefix = config.temporal.workflow_id_prefix
    queue = task_queue(config.temporal.task_queue_prefix, Role.ORCHESTRATOR)
    ids = []
    for spec in pool_specs(config):
        handle = await start_pool(client, config, spec, max_history_events=max_history_events)
        await handle.signal("reconfigure", spec)
        ids.append(handle.id)
    await client.start_workflow(
        AutoholdWorkflow.run, AutoholdInput(max_history_events=max_history_events),
        id=prefix + AUTOHOLD_ID, task_queue=queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary="autohold requests: keep the nodes of failing builds for debugging",
    )
    return ids


async def start_pool(client: Client, config: LockmasterConfig, spec: PoolSpec,
                     *, max_history_events: int | None = None) -> WorkflowHandle:
    """Start the pool's workflow, or find it running. Its `reconfigure` signal is the spec
    (pool_specs): what ensure_pools and `lockmaster config apply` send."""
    return await client.start_workflow(
        NodePoolWorkflow.run,
        PoolInput(spec=spec, task_queue_prefix=config.temporal.task_queue_prefix,
                  max_history_events=max_history_events),
        id=config.temporal.workflow_id_prefix + pool_id(spec.provider, spec.pool),
        task_queue=task_queue(config.temporal.task_queue_prefix, Role.ORCHESTRATOR),
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes([
            SearchAttributePair(search_attributes.PROVIDER, spec.provider)]),
        static_summary=f"node pool {spec.provider}/{spec.pool} ({spec.driver.value})",
    )


class NodePools:
    """The operator's view of the pools of one deployment."""

    def __init__(self, client: Client, config: LockmasterConfig) -> None:
        self.client = client
        self.config = config
        self.prefix = config.temporal.workflow_id_prefix
        self.specs = pool_specs(config)

    def handle(self, spec: PoolSpec) -> WorkflowHandle:
        return self.client.get_workflow_handle(self.prefix + pool_id(spec.provider, spec.pool))

    def pools_of(self, provider: str | None) -> list[PoolSpec]:
        if provider is None:
            return list(self.specs)
        found = [s for s in self.specs if s.provider == provider]
        if not found:
            names = sorted({s.provider for s in self.specs})
            raise PoolError(f"no provider {provider!r} is configured (providers: "
                            f"{', '.join(names) or 'none'})")
        return found

    async def status(self, provider: str | None = None) -> list[PoolStatus]:
        result = []
        for spec in self.pools_of(provider):
            try:
                result.append(await self.handle(spec).query(
                    "status", PoolStatusQuery(), result_type=PoolStatus))
            except RPCError as exc:
                raise PoolError(f"pool {spec.provider}/{spec.pool} is not running ({exc}); "
                                "start the workers (lockmaster run / lockmaster worker all)"
                                ) from exc
        return result

    async def set_enabled(self, provider: str, enabled: bool, reason: str,
                          by: str | None = None) -> list[str]:
        messages = []
        for spec in self.pools_of(provider):
            result: OperatorResult = await self.handle(spec).execute_update(
                "set_enabled", SetEnabled(enabled=enabled, reason=reason, by=by),
                result_type=OperatorResult)
            messages.append(result.message)
        return messages

    async def _pool_of_node(self, node_id: str) -> PoolSpec:
        """`provider/pool/node` or a bare node id (searched in every pool)."""
        parts = node_id.split("/")
        if len(parts) == 3:
            for spec in self.specs:
                if (spec.provider, spec.pool) == (parts[0], parts[1]):
                    return spec
            raise PoolError(f"no pool {parts[0]}/{parts[1]} is configured")
        matches = [s.provider + "/" + s.pool for s in await self.status()
                   for n in s.nodes if n.id == node_id]
        if not matches:
            raise PoolError(f"no node {node_id!r} in any pool (see `lockmaster nodes list`)")
        if len(matches) > 1:
            raise PoolError(f"node id {node_id!r} is in several pools ({', '.join(matches)}): "
                            "name it as provider/pool/node")
        provider, pool = matches[0].split("/")
        return next(s for s in self.specs if (s.provider, s.pool) == (provider, pool))

    async def hold(self, node: str, until: float, reason: str,
                   by: str | None = None) -> OperatorResult:
        spec = await self._pool_of_node(node)
        return await self.handle(spec).execute_update(
            "hold_node", HoldNode(node_id=node.split("/")[-1], hold_until=until, reason=reason,
                                  by=by),
            result_type=OperatorResult)

    async def delete(self, node: str, by: str | None = None,
                     reason: str | None = None) -> OperatorResult:
        spec = await self._pool_of_node(node)
        return await self.handle(spec).execute_update(
            "delete_node", DeleteNode(node_id=node.split("/")[-1], by=by, reason=reason),
            result_type=OperatorResult)

    # --- autohold ------------------------------------------------------------------------------

    def _autoholds(self) -> WorkflowHandle:
        return self.client.get_workflow_handle(self.prefix + AUTOHOLD_ID)

    async def autohold_add(self, hold: Autohold) -> OperatorResult:
        return await self._autoholds().execute_update("add", hold, result_type=OperatorResult)

    async def autohold_list(self) -> AutoholdList:
        return await self._autoholds().query("list", AutoholdListQuery(),
                                             result_type=AutoholdList)

    async def autohold_remove(self, hold_id: str) -> OperatorResult:
        return await self._autoholds().execute_update("remove", AutoholdDelete(id=hold_id),
                                                      result_type=OperatorResult)
