"""Operator commands on the gate's queues: enqueue, dequeue, promote. Each is a signal to the
queue workflow (`<pipeline>/<queue>`), so the `temporal` CLI can send the same:

    temporal workflow signal --workflow-id gate/integrated --name dequeue \\
        --input '{"project": "org/project1", "number": 3}'
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.change import ChangeRef
from lockmaster.model.gate import DequeueRequest, EnqueueRequest, PromoteRequest
from lockmaster.pipelines.freeze import freeze_pipeline, queue_job_graphs
from lockmaster.pipelines.queues import gate_input, queue_name, queue_projects
from lockmaster.review.base import ReviewDriver
from lockmaster.starters.check_runs import Trigger, cancel_checks, start_check
from lockmaster.starters.router_types import RouteAction
from lockmaster.temporal import search_attributes
from lockmaster.temporal.task_queues import Role, task_queue
from lockmaster.workflows.gate import GateQueueWorkflow
from lockmaster.workflows.ids import gate_id


def gate_id_for(config: LockmasterConfig, pipeline: str, queue: str) -> str:
    """`gate/<queue>` for the gate pipeline: the pipeline's name, then the queue's."""
    return gate_id(queue, config.temporal.workflow_id_prefix).replace("gate/", f"{pipeline}/", 1)


async def enqueue_change(
    client: Client, config: LockmasterConfig, pipeline: str, change: ChangeRef,
    *, trigger: str = "", trigger_at: float | None = None, trigger_exact: bool = False,
    build_heartbeat_timeout: float = 30.0,
    max_history_events: int | None = None, ignore_requirements: bool = False,
) -> RouteAction:
    """Signal-with-start: the queue workflow starts with the first change that needs it."""
    pipe = config.pipeline(pipeline)
    if pipe.manager != "dependent":
        return RouteAction("ignored", detail=f"{pipeline} is not a dependent pipeline")
    queue = queue_name(config, change.project, change.branch)
    wid = gate_id_for(config, pipeline, queue)
    own = freeze_pipeline(config, change.project, pipeline)
    others = queue_job_graphs(config, [p for p in queue_projects(config, queue)
                                       if p != change.project], pipeline)
    request = EnqueueRequest(change=change, pipeline=pipeline, jobs=own.jobs,
                             fail_fast=own.fail_fast, trigger=trigger, trigger_at=trigger_at,
                             trigger_exact=trigger_exact,
                             ignore_requirements=ignore_requirements, other_projects=others)
    await client.start_workflow(
        GateQueueWorkflow.run,
        gate_input(config, pipe, queue, build_heartbeat_timeout=build_heartbeat_timeout,
                   max_history_events=max_history_events),
        id=wid,
        task_queue=task_queue(config.temporal.task_queue_prefix, Role.ORCHESTRATOR),
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal="enqueue",
        start_signal_args=[request],
        search_attributes=TypedSearchAttributes([
            SearchAttributePair(search_attributes.PIPELINE, pipeline),
        ]),
        static_summary=f"{pipeline} queue {queue}",
    )
    return RouteAction("enqueued", wid, change.key)


async def enqueue(
    client: Client, config: LockmasterConfig, drivers: dict[str, ReviewDriver],
    pipeline: str, connection: str, number: int,
) -> RouteAction:
    """Operator enqueue: the change's current patchset, whatever its approvals (a dependent
    pipeline: into its queue; an independent one: a new run, as a recheck starts)."""
    info = await drivers[connection].get_change(number)
    if config.pipeline(pipeline).manager == "independent":
        return await start_check(client, config, pipeline, info.ref(),
                                 Trigger(f"operator|{pipeline}|{info.number}", kind="operator"))
    return await enqueue_change(client, config, pipeline, info.ref(), trigger="operator",
                                ignore_requirements=True)


async def _signal(client: Client, wid: str, name: str, arg: object) -> RouteAction:
    try:
        await client.get_workflow_handle(wid).signal(name, arg)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return RouteAction("ignored", wid, "no such queue is running")
        raise
    return RouteAction(name, wid)


async def dequeue(
    client: Client, config: LockmasterConfig, pipeline: str, project: str, number: int,
    connection: str | None = None, branch: str | None = None,
) -> RouteAction:
    """Take the change out of the pipeline: a queue's item (and the items needing it), or an
    independent pipeline's running check of it (runs that test it as a dependency go on)."""
    if config.pipeline(pipeline).manager == "independent":
        conn = connection or (config.project(project).connection  # type: ignore[union-attr]
                              if config.project(project) else "")
        change = ChangeRef(connection=conn, project=project, branch=branch or "", number=number,
                           patchset=1)
        cancelled = await cancel_checks(client, config, change, upto=None, pipelines=[pipeline],
                                        reason="dequeued by an operator")
        if not cancelled:
            return RouteAction("ignored", detail=f"change {number} has no running {pipeline} run")
        return RouteAction("dequeued", ", ".join(a.workflow_id or "" for a in cancelled))
    wid = gate_id_for(config, pipeline, queue_name(config, project, branch))
    return await _signal(client, wid, "dequeue", DequeueRequest(project=project, number=number))
async def promote(
    client: Client, config: LockmasterConfig, pipeline: str, queue: str, changes: list[str],
) -> RouteAction:
    wid = gate_id_for(config, pipeline, queue)
    return await _signal(client, wid, "promote", PromoteRequest(changes=changes))
