"""Bring the running workflows to a configuration: `lockmaster config apply FILE`, and a worker's
SIGHUP (workers/reload.py). Every running gate queue is sent its settings (signal `reconfigure`
with a QueueReconfigure: pipelines/gate_reconfigure.py says what the queue does with them),
every node pool its PoolSpec and every TE broker its TEs (signal `reconfigure`, as a worker's
start sends them). Nothing is terminated: a running queue or pool the configuration no longer
has is reported and left running (its items and nodes finish or are dequeued by hand).

The running workflows are found with the visibility list (those of this deployment: their IDs
start with `temporal.workflow-id-prefix`), and the configured pools and brokers are also looked
up by ID (the list may lag just after a start).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.config.models import LockmasterConfig
from lockmaster.leases.specs import broker_id
from lockmaster.model.gate import QueueReconfigure, StatusQuery
from lockmaster.model.nodes import PoolSpec, PoolStatus, PoolStatusQuery
from lockmaster.model.testenv import BrokerStatus, BrokerStatusQuery, TEConfig
from lockmaster.nodepool.allocator import single_use
from lockmaster.nodepool.specs import pool_id, pool_specs
from lockmaster.pipelines.gate_reconfigure import describe
from lockmaster.pipelines.queues import queue_gone, queue_reconfigure
from lockmaster.starters.nodepool import start_pool
from lockmaster.starters.testenv import broker_configs, start_broker

GATE, POOL, BROKER = "GateQueueWorkflow", "NodePoolWorkflow", "TEBrokerWorkflow"
RUNNING_QUERY = (f'ExecutionStatus = "Running" AND WorkflowType IN '
                 f'("{GATE}", "{POOL}", "{BROKER}")')
# A query is answered by the workflow's worker: with none running, do not wait for one.
QUERY_TIMEOUT = timedelta(seconds=5)
# The gate's current settings (a query the gate workflow may answer; without it, the new
# settings are printed instead of what changed).
SETTINGS_QUERY = "settings"

T = TypeVar("T")
Status = Literal["reconfigured", "unchanged", "started", "left running", "not running", "failed"]


@dataclass(frozen=True)
class Outcome:
    workflow_id: str
    status: Status
    detail: str = ""

    def line(self) -> str:
        return f"{self.workflow_id}: {self.status}" + (f": {self.detail}" if self.detail else "")


@dataclass
class ApplyResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def applied(self) -> list[Outcome]:
        """The running workflows brought to the configuration (sent it, or already on it)."""
        return [o for o in self.outcomes if o.status in ("reconfigured", "unchanged", "started")]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def lines(self) -> list[str]:
        return [o.line() for o in self.outcomes]


async def apply_config(client: Client, config: LockmasterConfig, *,
                       start_missing: bool = False) -> ApplyResult:
    """Send every running gate queue, node pool and TE broker of this deployment its settings
    from `config`. `start_missing`: also start the configured pools and brokers that are not
    running (what an orchestrator does at its start); otherwise they are reported."""
    prefix = config.temporal.workflow_id_prefix
    running = await running_workflows(client, prefix)
    pools = {prefix + pool_id(s.provider, s.pool): s for s in pool_specs(config)}
    brokers = {prefix + broker_id(label): (label, tes)
               for label, tes in broker_configs(config).items()}
    jobs = []
    for wid, spec in pools.items():
        jobs.append(_pool(client, config, wid, spec, running.get(wid) == POOL, start_missing))
    for wid, (label, tes) in brokers.items():
        jobs.append(_broker(client, config, wid, label, tes, running.get(wid) == BROKER,
                            start_missing))
    for wid, kind in sorted(running.items()):
        if kind == GATE:
            jobs.append(_gate(client, config, wid, prefix))
        elif (kind == POOL and wid not in pools) or (kind == BROKER and wid not in brokers):
            jobs.append(_left(wid, "no longer in the configuration"))
    return ApplyResult(list(await asyncio.gather(*jobs)))


async def running_workflows(client: Client, prefix: str) -> dict[str, str]:
    """This deployment's running queues, pools and brokers: workflow id -> workflow type."""
    found = {}
    async for wf in client.list_workflows(RUNNING_QUERY):
        if wf.id.startswith(prefix) and wf.workflow_type in (GATE, POOL, BROKER):
            found[wf.id] = wf.workflow_type
    return found


# --- one workflow each ----------------------------------------------------------------------------


async def _gate(client: Client, config: LockmasterConfig, wid: str, prefix: str) -> Outcome:
    pipeline, _, queue = wid[len(prefix):].partition("/")
    gone = queue_gone(config, pipeline, queue)
    if gone is not None:
        return Outcome(wid, "left running", gone)
    after = queue_reconfigure(config, config.pipeline(pipeline), queue)
    handle = client.get_workflow_handle(wid)
    before = await _query(handle, SETTINGS_QUERY, StatusQuery(), QueueReconfigure)
    if before == after:
        return Outcome(wid, "unchanged")
    return await _signal(handle, after, describe(before, after))


async def _missing(wid: str, handle: WorkflowHandle[Any, Any], listed: bool,
                   start_missing: bool, start: Callable[[], Awaitable[WorkflowHandle[Any, Any]]],
                   settings: Any, started: str) -> Outcome | None:
    """A pool or broker that is not running: started with the settings (SIGHUP of the
    orchestrator) or reported; None when it runs."""
    try:
        running = listed or await _is_running(handle)
    except RPCError as exc:
        return Outcome(wid, "failed", str(exc))
    if running:
        return None
    if not start_missing:
        return Outcome(wid, "not running", "the orchestrator worker starts it (at its start, "
                                           "or on SIGHUP)")
    try:
        await (await start()).signal("reconfigure", settings)
    except RPCError as exc:
        return Outcome(wid, "failed", str(exc))
    return Outcome(wid, "started", started)


async def _pool(client: Client, config: LockmasterConfig, wid: str, spec: PoolSpec,
                listed: bool, start_missing: bool) -> Outcome:
    handle = client.get_workflow_handle(wid)
    missing = await _missing(wid, handle, listed, start_missing,
                             lambda: start_pool(client, config, spec), spec,
                             _pool_settings(spec))
    if missing is not None:
        return missing
    before = await _query(handle, "status", PoolStatusQuery(), PoolStatus)
    return await _signal(handle, spec, pool_change(before, spec))


async def _broker(client: Client, config: LockmasterConfig, wid: str, label: str,
                  tes: TEConfig, listed: bool, start_missing: bool) -> Outcome:
    handle = client.get_workflow_handle(wid)
    missing = await _missing(wid, handle, listed, start_missing,
                             lambda: start_broker(client, config, label, tes), tes,
                             f"{len(tes.tes)} TEs")
    if missing is not None:
        return missing
    before = await _query(handle, "status", BrokerStatusQuery(), BrokerStatus)
    return await _signal(handle, tes, broker_change(before, tes))


async def _left(wid: str, why: str) -> Outcome:
    return Outcome(wid, "left running", why)


async def _signal(handle: WorkflowHandle, arg: object, detail: str) -> Outcome:
    try:
        await handle.signal("reconfigure", arg)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return Outcome(handle.id, "not running", "it ended meanwhile")
        return Outcome(handle.id, "failed", str(exc))
    return Outcome(handle.id, "reconfigured", detail)


async def _query(handle: WorkflowHandle, name: str, arg: object, result: type[T]) -> T | None:
    """The workflow's answer, or None (no such query, no worker answering in time)."""
    try:
        return await handle.query(name, arg, result_type=result, rpc_timeout=QUERY_TIMEOUT)
    except Exception:  # unknown query, worker down, timeout: the change is then not diffed
        return None


async def _is_running(handle: WorkflowHandle) -> bool:
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return described.status is WorkflowExecutionStatus.RUNNING


# --- what changed, in words ---------------------------------------------------------------------


def pool_change(before: PoolStatus | None, spec: PoolSpec) -> str:
    """What a pool's new spec changes that its status shows: max-servers; slots and labels of
    static and local pools. A cloud pool's labels, images and flavors are sent as they are."""
    if before is None:
        return "now " + _pool_settings(spec)
    parts = []
    if before.max_servers != spec.max_servers:
        parts.append(f"max-servers {before.max_servers or 'no limit'} -> "
                     f"{spec.max_servers or 'no limit'}")
    if not single_use(spec):
        parts += _set_change("slots", {n.id for n in before.nodes},
                             {s.node_id for s in spec.slots})
        parts += _set_change("labels", {label for n in before.nodes for label in n.labels},
                             set(spec.labels))
    return "; ".join(parts) or f"sent ({_pool_settings(spec)})"


def broker_change(before: BrokerStatus | None, tes: TEConfig) -> str:
    new = {te.key for te in tes.tes}
    if before is None:
        return f"now {len(new)} TEs"
    parts = _set_change("TEs", {te.key for te in before.tes}, new)
    return "; ".join(parts) or f"sent ({len(new)} TEs, none added or removed)"


def _pool_settings(spec: PoolSpec) -> str:
    text = f"labels {', '.join(sorted(spec.labels)) or 'none'}"
    if spec.slots:
        text += f"; {len(spec.slots)} slots"
    if spec.max_servers is not None:
        text += f"; max-servers {spec.max_servers}"
    return text


def _set_change(what: str, before: set[str], after: set[str]) -> list[str]:
    changes = [*(f"+{x}" for x in sorted(after - before)),
               *(f"-{x}" for x in sorted(before - after))]
    return [f"{what} {' '.join(changes)}"] if changes else []
