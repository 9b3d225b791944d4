"""Operator commands on the gate's queues: enqueue, dequeue, promote. Enqueue is a signal to the
queue workflow (`<pipeline>/<queue>`); dequeue and promote are updates, which answer what they
did (or are rejected, with the reason, when they would change nothing). The `temporal` CLI can
send the same (signals of these names work too, unanswered):

    temporal workflow update execute --workflow-id gate/integrated --name dequeue \\
        --input '{"project": "org/project1", "number": 3}'

An enqueue is checked first: a change that is merged, abandoned, unknown, a work in progress or
private, or of a project without jobs in the pipeline, is refused and nothing is signalled.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from datetime import timedelta
from typing import Literal

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.audit import note_of
from lockmaster.model.change import ChangeInfo, ChangeRef
from lockmaster.model.gate import CommandResult, DequeueRequest, EnqueueRequest, PromoteRequest
from lockmaster.pipelines.freeze import freeze_pipeline, queue_job_graphs
from lockmaster.pipelines.gate_enqueue import unmet_requirements
from lockmaster.pipelines.queues import gate_input, queue_name, queue_projects
from lockmaster.review.base import ReviewDriver
from lockmaster.starters.check_runs import Trigger, cancel_checks, start_check
from lockmaster.starters.router_types import RouteAction
from lockmaster.temporal import search_attributes
from lockmaster.temporal.busy import when_not_busy
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
    review_round: float | None = None, by: str | None = None, reason: str | None = None,
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
                             ignore_requirements=ignore_requirements, other_projects=others,
                             by=by, reason=reason)
    # (Signal-with-start: refused for a moment while the queue is busy continuing as new.)
    await when_not_busy(lambda: client.start_workflow(
        GateQueueWorkflow.run,
        gate_input(config, pipe, queue, build_heartbeat_timeout=build_heartbeat_timeout,
                   max_history_events=max_history_events, review_round=review_round),
        id=wid,
        task_queue=task_queue(config.temporal.task_queue_prefix, Role.ORCHESTRATOR),
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # A busy queue's history runs to megabytes before it continues as new; a worker that
        # lost it from its cache replays it whole, which under load took longer than Temporal's
        # default 10 s task timeout, and each timed-out attempt started the replay again (the
        # soak's queue wedged so). Its runs continued as new keep this timeout.
        task_timeout=GATE_TASK_TIMEOUT,
        start_signal="enqueue",
        start_signal_args=[request],
        search_attributes=TypedSearchAttributes([
            SearchAttributePair(search_attributes.PIPELINE, pipeline),
        ]),
        static_summary=f"{pipeline} queue {queue}",
    ))
    return RouteAction("enqueued", wid, change.key)


GATE_TASK_TIMEOUT = timedelta(seconds=60)


# Answers of a command that was refused (bad input: exit 2), that changed nothing (exit 1), or
# that is not known to have done anything (no answer in time: exit 1).
REFUSED, IGNORED, UNANSWERED = "refused", "ignored", "unanswered"
ANSWER_TIMEOUT = 30.0  # seconds an update waits for the queue's answer
NO_REASON = "no reason given"  # an operator's dequeue without --reason


def enqueue_refusal(config: LockmasterConfig, pipeline: str, info: ChangeInfo) -> str | None:
    """Why the change can never enter the pipeline as it is (None: it may). Its approvals are
    not asked for (an operator's enqueue); what `change approve` refuses, this refuses too."""
    what = f"change {info.number} ({info.project})"
    if info.status != "NEW":
        return f"{what} is {info.status.lower()}: only an open change can enter {pipeline}"
    project = config.project(info.project)
    if project is None:
        return f"{what}: project {info.project} is not configured in lockmaster"
    if pipeline not in project.pipelines or not project.pipelines[pipeline].project_jobs():
        return (f"{what}: {info.project} has no jobs in {pipeline} (pipelines: "
                f"{', '.join(project.pipelines) or 'none'})")
    if config.pipeline(pipeline).manager == "dependent":
        if info.wip:
            return (f"{what} is a work in progress: it cannot enter {pipeline} (mark it ready: "
                    f"lockmaster change ready {info.number})")
        if info.private:
            return (f"{what} is private: it cannot enter {pipeline} (make it public: "
                    f"lockmaster change public {info.number})")
    return None


# What an operator's enqueue does about the pipeline's requirements (approvals): "ignore"
# them (Zuul's own enqueue; `simulate` plays Zuul's scenarios so), "require" them (refused
# when unmet: `lockmaster gate enqueue`), or "force" the change in without them (`--force`,
# which needs a reason; the item says so).
Approvals = Literal["ignore", "require", "force"]


def approvals_refusal(config: LockmasterConfig, pipeline: str, info: ChangeInfo) -> str | None:
    """What the change lacks of the pipeline's requirements, and how to enqueue it anyway
    (None: it meets them), e.g. "change 5 (demo/hello) does not meet gate's requirements:
    Code-Review 0 (needs +2); ..."."""
    unmet = unmet_requirements(config.pipeline(pipeline).require, info.approvals)
    if not unmet:
        return None
    return (f"change {info.number} ({info.project}) does not meet {pipeline}'s requirements: "
            f"{', '.join(unmet)}; to enqueue it without them, say why: lockmaster gate enqueue "
            f"--change {info.number} --pipeline {pipeline} --force --reason \"...\"")


async def enqueue(
    client: Client, config: LockmasterConfig, drivers: dict[str, ReviewDriver],
    pipeline: str, connection: str, number: int, *,
    approvals: Approvals = "ignore", by: str | None = None, reason: str | None = None,
) -> RouteAction:
    """Operator enqueue of the change's current patchset (a dependent pipeline: into its queue;
    an independent one: a new run, as a recheck starts), by `by` for `reason`. A change that
    can never enter, or (`approvals="require"`) lacks the pipeline's requirements, is refused:
    nothing is signalled or started."""
    info = await drivers[connection].get_change(number)
    refusal = enqueue_refusal(config, pipeline, info)
    if refusal is not None:
        return RouteAction(REFUSED, detail=refusal)
    lacking = approvals_refusal(config, pipeline, info) if approvals != "ignore" else None
    if lacking is not None and approvals == "require":
        return RouteAction(REFUSED, detail=lacking)
    if approvals == "force" and lacking is not None and not (reason or "").strip():
        return RouteAction(REFUSED, detail=f"change {number}: --force needs --reason (why it "
                                           "enters without its approvals)")
    # Forced: let in without the requirements (only when it lacks them: else it enters as an
    # approved change does, and leaves as one when an approval is taken back).
    forced = approvals == "ignore" or (approvals == "force" and lacking is not None)
    note = note_of(by, reason, forced=forced and approvals == "force")
    said = f" ({note.describe('enqueued')})" if note else ""
    if config.pipeline(pipeline).manager == "independent":
        # Who and why go into the run's summary: "check: p change 1,1 (enqueued by ...)".
        action = await start_check(client, config, pipeline, info.ref(),
                                   Trigger(f"operator|{pipeline}|{info.number}",
                                           kind=note.describe("enqueued") if note
                                           else "operator"))
    else:
        action = await enqueue_change(client, config, pipeline, info.ref(), trigger="operator",
                                      ignore_requirements=forced, by=by, reason=reason)
    return dataclasses.replace(action, detail=f"{action.detail}{said}") if said else action


async def _update(client: Client, wid: str, name: str,
                  arg: DequeueRequest | PromoteRequest) -> CommandResult | RouteAction:
    """The queue's answer, or what to say when there is none (not running, rejected, silent)."""
    def ask() -> Awaitable[CommandResult]:
        return client.get_workflow_handle(wid).execute_update(name, arg,
                                                              result_type=CommandResult)

    try:
        # Refused while the queue was busy or continuing as new (nothing was done): again.
        return await asyncio.wait_for(when_not_busy(ask, patience=ANSWER_TIMEOUT),
                                      ANSWER_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return RouteAction(IGNORED, wid, "no such queue is running")
        raise
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        return RouteAction(IGNORED, wid, cause.message if isinstance(cause, ApplicationError)
                           else str(cause))
    except TimeoutError:
        return RouteAction(UNANSWERED, wid, f"the queue did not answer within "
                           f"{ANSWER_TIMEOUT:.0f} s; are the workers running (lockmaster run, "
                           "lockmaster worker all)? The command may still take effect")


def _order(result: CommandResult) -> str:
    return f"queue now: {' '.join(result.order) or 'empty'}"


async def dequeue(
    client: Client, config: LockmasterConfig, pipeline: str, project: str, number: int,
    connection: str | None = None, branch: str | None = None, *,
    by: str | None = None, reason: str | None = None,
) -> RouteAction:
    """Take the change out of the pipeline: a queue's item (and the items needing it), or an
    independent pipeline's running check of it (runs that test it as a dependency go on).
    `by`, `reason`: the operator and why, kept in the queue and said in the report."""
    why = (reason or "").strip() or NO_REASON
    if config.pipeline(pipeline).manager == "independent":
        conn = connection or (config.project(project).connection  # type: ignore[union-attr]
                              if config.project(project) else "")
        change = ChangeRef(connection=conn, project=project, branch=branch or "", number=number,
                           patchset=1)
        cancelled = await cancel_checks(
            client, config, change, upto=None, pipelines=[pipeline],
            reason=f"dequeued by {by}: {why}" if by else "dequeued by an operator",
            note=note_of(by, why))
        if not cancelled:
            return RouteAction("ignored", detail=f"change {number} has no running {pipeline} run")
        return RouteAction("dequeued", ", ".join(a.workflow_id or "" for a in cancelled))
    wid = gate_id_for(config, pipeline, queue_name(config, project, branch))
    result = await _update(client, wid, "dequeue",
                           DequeueRequest(project=project, number=number, by=by, reason=why)
                           if by else DequeueRequest(project=project, number=number))
    if isinstance(result, RouteAction):
        return result
    if not result.dequeued:
        return RouteAction("dequeued", wid, f"change {number} no longer waits to enter; "
                                            f"{_order(result)}")
    head, *rest = result.dequeued
    also = f" (with {' '.join(rest)}, which need{'s' if len(rest) == 1 else ''} it)" \
        if rest else ""
    said = f" ({by}: {why})" if by else ""
    return RouteAction("dequeued", wid, f"{head}{also}{said}; {_order(result)}")


async def promote(
    client: Client, config: LockmasterConfig, pipeline: str, queue: str, changes: list[str],
    *, by: str | None = None, reason: str | None = None,
) -> RouteAction:
    wid = gate_id_for(config, pipeline, queue)
    result = await _update(client, wid, "promote",
                           PromoteRequest(changes=changes, by=by, reason=reason))
    if isinstance(result, RouteAction):
        return result
    note = note_of(by, reason)
    said = f" ({note.describe('promoted')})" if note else ""
    return RouteAction("promoted", wid, _order(result) + said)
