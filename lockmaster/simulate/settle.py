"""When a simulation has settled: no work in progress anywhere.

Settled means: no running workflow of this simulation (workflow-ID prefix) other than gate queues,
and every gate queue's `status` query reports it idle, or holding only items that wait (nothing
merging, building or reporting). Visibility lags a little behind starts, so workflows the router
just started (`recent`) and the gate queues the layout can have are also asked directly.
"""

from __future__ import annotations

from collections.abc import Iterable

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.gate import ItemView, QueueStatus, StatusQuery
from lockmaster.simulate.layout import queue_name
from lockmaster.workflows.ids import gate_id

GATE_WORKFLOW_TYPE = "GateQueueWorkflow"
RUNNING_JOB_STATES = ("queued", "running")
NOT_STARTED_JOB_STATES = ("waiting", *RUNNING_JOB_STATES)


def gate_ids(config: LockmasterConfig) -> set[str]:
    """Every gate queue workflow the layout can have."""
    prefix = config.temporal.workflow_id_prefix
    return {
        gate_id(queue_name(config, project.name), prefix)
        for pipeline in config.pipelines if pipeline.manager == "dependent"
        for project in config.projects if pipeline.name in project.pipelines
    }


def item_in_flight(item: ItemView) -> bool:
    """Merging, building, or done building and about to report (or reporting a conflict)."""
    if item.merge in ("pending", "conflict"):
        return True
    states = [job.state for job in item.jobs]
    if any(state in RUNNING_JOB_STATES for state in states):
        return True
    return bool(states) and not any(state in NOT_STARTED_JOB_STATES for state in states)


def queue_busy(status: QueueStatus) -> list[str]:
    if status.idle:
        return []
    return [f"gate queue {status.queue}: {item.change} ({item.project})"
            for item in status.items if item_in_flight(item)]


async def busy(client: Client, config: LockmasterConfig, recent: Iterable[str] = ()) -> list[str]:
    """What is still in progress (empty: settled)."""
    prefix = config.temporal.workflow_id_prefix
    running: set[str] = set()
    gates: set[str] = set()
    query = f'WorkflowId STARTS_WITH "{prefix}" AND ExecutionStatus = "Running"'
    async for wf in client.list_workflows(query):
        if wf.workflow_type == GATE_WORKFLOW_TYPE or wf.id.startswith(f"{prefix}gate/"):
            gates.add(wf.id)
        else:
            running.add(wf.id)
    for wid in set(recent) - running - gates:
        if await _running(client, wid):
            running.add(wid)
    for wid in gate_ids(config) - gates:
        if await _running(client, wid):
            gates.add(wid)
    out = [f"workflow {wid}" for wid in sorted(running - gates)]
    for wid in sorted(gates):
        status = await _gate_status(client, wid)
        if status is not None:
            out += queue_busy(status)
    return out


async def settled(client: Client, config: LockmasterConfig, recent: Iterable[str] = ()) -> bool:
    return not await busy(client, config, recent)


async def _running(client: Client, wid: str) -> bool:
    try:
        desc = await client.get_workflow_handle(wid).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return desc.status == WorkflowExecutionStatus.RUNNING


async def _gate_status(client: Client, wid: str) -> QueueStatus | None:
    """The queue's status; None when the workflow is gone (ended since it was listed)."""
    try:
        return await client.get_workflow_handle(wid).query(
            "status", StatusQuery(), result_type=QueueStatus
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
