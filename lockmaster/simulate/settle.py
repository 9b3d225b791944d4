"""When a simulation has settled: no work in progress anywhere.

Settled means: no running workflow of this simulation (workflow-ID prefix) other than gate queues,
and no gate queue's `status` query reports work in flight (`busy`). Visibility lags a little
behind starts, so workflows the router just started (`recent`) and the gate queues the layout
can have are also asked directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.gate import QueueStatus, StatusQuery
from lockmaster.pipelines.queues import queue_name
from lockmaster.starters.operator import gate_id_for
from lockmaster.temporal.busy import when_not_busy

GATE_WORKFLOW_TYPE = "GateQueueWorkflow"
QUERY_SECONDS = 30.0
UNANSWERED = "unanswered"


def gate_ids(config: LockmasterConfig) -> set[str]:
    """Every gate queue workflow the layout can have."""
    return {
        gate_id_for(config, pipeline.name, queue_name(config, project.name))
        for pipeline in config.pipelines if pipeline.manager == "dependent"
        for project in config.projects if pipeline.name in project.pipelines
    }


def queue_busy(status: QueueStatus) -> list[str]:
    """What a gate queue has in flight: the queue says so itself (merges, builds, reports or
    commands under way). Items waiting for a dependency to be approved are not work."""
    if not status.busy:
        return []
    where = f"{status.pipeline} queue {status.queue}"
    running = [f"{where}: {item.change} ({item.project})" for item in status.items]
    return running or [f"{where}: work in progress"]


async def busy(client: Client, config: LockmasterConfig, recent: Iterable[str] = ()) -> list[str]:
    """What is still in progress (empty: settled)."""
    prefix = config.temporal.workflow_id_prefix
    running: set[str] = set()
    gates: set[str] = set()
    known_gates = gate_ids(config)
    query = f'WorkflowId STARTS_WITH "{prefix}" AND ExecutionStatus = "Running"'
    async for wf in client.list_workflows(query):
        if wf.workflow_type == GATE_WORKFLOW_TYPE or wf.id in known_gates:
            gates.add(wf.id)
        else:
            running.add(wf.id)
    for wid in set(recent) - running - gates:
        if await _running(client, wid):
            running.add(wid)
    for wid in known_gates - gates:
        if await _running(client, wid):
            gates.add(wid)
    out = [f"workflow {wid}" for wid in sorted(running - gates)]
    for wid in sorted(gates):
        status = await _gate_status(client, wid)
        if status is UNANSWERED:
            out.append(f"queue {wid}: not answering its status query yet (a long workflow task)")
        elif isinstance(status, QueueStatus):
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


async def _gate_status(client: Client, wid: str) -> QueueStatus | str | None:
    """The queue's status; None when the workflow is gone (ended since it was listed);
    UNANSWERED when it did not answer in time: a queue deciding on a long backlog answers
    after its workflow task, which can take longer than a query's deadline. It is busy, not
    broken: the settler waits for it within its own patience."""
    try:
        handle = client.get_workflow_handle(wid)
        # (A query that meets the queue continuing as new is refused: asked again.)
        return await when_not_busy(lambda: handle.query(
            "status", StatusQuery(), result_type=QueueStatus,
            rpc_timeout=timedelta(seconds=QUERY_SECONDS)))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        if exc.status == RPCStatusCode.DEADLINE_EXCEEDED or "timeout expired" in str(
                exc).lower():
            return UNANSWERED
        raise
