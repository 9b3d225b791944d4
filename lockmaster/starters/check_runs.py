"""Check runs (independent pipelines): start one for a patchset, cancel a change's runs, and tell
the runs that test a change as a dependency that it has a new patchset.

Each check run is its own workflow, `check/<project>/<change>/<patchset>`, so these are workflow
starts, cancellations and signals. Used by the event router and by operators' enqueue/dequeue.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.audit import OperatorNote
from lockmaster.model.change import ChangeRef
from lockmaster.model.check import CheckInput, CheckStatus, DependencyUpdated, StatusQuery
from lockmaster.pipelines.duplicates import same_time
from lockmaster.pipelines.freeze import freeze_pipeline, report_labels
from lockmaster.starters.router_types import RouteAction
from lockmaster.temporal import search_attributes
from lockmaster.temporal.busy import when_not_busy
from lockmaster.temporal.client import describe
from lockmaster.temporal.task_queues import Role, task_queue
from lockmaster.workflows.check import CheckWorkflow, check_workflow_id

# A run past its builds answers its status query at once and closes right after its report.
REPORTING_QUERY = 5.0
REPORTING_WAIT = 20.0
# A cancelled run reports its dequeue while its builds stop: the next run waits that long at
# most for it.
DEQUEUE_REPORT_WAIT = 10.0
DEQUEUE_REPORT_POLL = 0.1


@dataclass(frozen=True)
class Trigger:
    """What started a run: the event's identity and time (duplicate detection). `exact`: the
    time is the review system's own, not when lockmaster received the event."""

    identity: str
    at: float | None = None
    kind: str = "event"  # the event type, or operator
    exact: bool = False


def same_event(memo: dict[str, object], trigger: Trigger) -> bool:
    """Is `trigger` the event that started the run with this memo, delivered again?"""
    if memo.get("trigger") != trigger.identity:
        return False
    first = memo.get("trigger_at")
    if not isinstance(first, int | float) or trigger.at is None:
        return False  # no time to tell them apart: a deliberate repeat gets its run
    return same_time(first, bool(memo.get("trigger_exact")), trigger.at, trigger.exact)


async def start_check(
    client: Client, config: LockmasterConfig, pipeline: str, ref: ChangeRef, trigger: Trigger,
    *, build_heartbeat_timeout: float = 30.0,
) -> RouteAction:
    """Start the run of this patchset in the pipeline, unless the same event already did."""
    wid = check_workflow_id(ref, pipeline, config.temporal.workflow_id_prefix)
    existing = await describe(client, wid)
    if existing is not None and existing.status == WorkflowExecutionStatus.RUNNING \
            and await _has_finished_testing(client, wid):
        # Its builds are over and its result is being (or has been) reported: an event after
        # that report (a recheck) is for a new run, not this one. Start it once this run has
        # closed; until then the event is not taken (its sender keeps it and hands it over
        # again), never dropped as "already in the pipeline".
        existing = await _closed(client, wid, trigger)
    if existing is not None:
        if existing.status == WorkflowExecutionStatus.RUNNING:
            return RouteAction("already-running", wid, "change is already in the pipeline")
        if same_event(await existing.memo(), trigger):
            return RouteAction("duplicate", wid, "the same event started the last run")
    pipe = config.pipeline(pipeline)
    frozen = freeze_pipeline(config, ref.project, pipeline)
    inp = CheckInput(
        change=ref, pipeline=pipeline, jobs=frozen.jobs, fail_fast=frozen.fail_fast,
        labels=report_labels(pipe, config.web.url), trigger=trigger.identity,
        task_queue_prefix=config.temporal.task_queue_prefix,
        precedence=pipe.node_precedence, build_heartbeat_timeout=build_heartbeat_timeout,
        ignore_dependencies=pipe.ignore_dependencies, require=dict(pipe.require),
    )
    handle = await client.start_workflow(
        CheckWorkflow.run, inp, id=wid,
        task_queue=task_queue(config.temporal.task_queue_prefix, Role.ORCHESTRATOR),
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        # Two deliveries racing each other: the second joins the first's run.
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(search_attributes.pairs_for_change(
            connection=ref.connection, project=ref.project, branch=ref.branch,
            change=ref.number, patchset=ref.patchset, pipeline=pipeline)),
        memo={"trigger": trigger.identity, "trigger_at": trigger.at or time.time(),
              "trigger_exact": trigger.exact},
        static_summary=f"{pipeline}: {ref.project} change {ref.key} ({trigger.kind})",
    )
    return RouteAction("started", handle.id, f"run {handle.result_run_id}")


class RunStillReporting(RuntimeError):
    """The run that already tested this patchset is still reporting: the event starts the next
    run once that one has closed (its sender keeps it and hands it over again)."""


async def _has_finished_testing(client: Client, wid: str) -> bool:
    """Is the running run past its builds (reporting its result, or done)? A run whose worker
    does not answer counts as still testing (as before: the event is already in it)."""
    try:
        status = await asyncio.wait_for(client.get_workflow_handle(wid).query(
            CheckWorkflow.status, StatusQuery(), result_type=CheckStatus), REPORTING_QUERY)
    except (RPCError, TimeoutError, WorkflowQueryFailedError):
        return False
    return status.phase in ("reporting", "done")


async def _closed(client: Client, wid: str, trigger: Trigger
                  ) -> WorkflowExecutionDescription | None:
    """The run's description once it has closed (bounded wait), else RunStillReporting."""
    handle = client.get_workflow_handle(wid)
    try:
        await asyncio.wait_for(handle.result(), REPORTING_WAIT)
    except TimeoutError:
        raise RunStillReporting(
            f"{wid} is reporting its result; {trigger.kind} {trigger.identity} starts the next "
            "run once it has closed") from None
    except Exception:  # closed, whichever way it ended
        pass
    return await describe(client, wid)


async def cancel_checks(
    client: Client, config: LockmasterConfig, change: ChangeRef, *, upto: int | None,
    pipelines: list[str], reason: str, note: OperatorNote | None = None,
) -> list[RouteAction]:
    """Cancel the running check runs of this change: of patchsets 1..upto, or of every patchset
    (None). A cancelled run cancels its builds and reports nothing (or its pipeline's dequeue
    report). `note`: the operator dequeuing it, told to the run first (its reason and report
    say who and why)."""
    query = (
        f'{search_attributes.PROJECT.name} = "{change.project}" AND '
        f"{search_attributes.CHANGE.name} = {change.number} AND "
        f"{search_attributes.CONNECTION.name} = \"{change.connection}\" AND "
        'ExecutionStatus = "Running"'
    )
    if not pipelines:
        return []
    query += " AND (" + " OR ".join(
        f'{search_attributes.PIPELINE.name} = "{n}"' for n in pipelines) + ")"
    ids: set[str] = set()
    async for wf in client.list_workflows(query):
        ps = wf.typed_search_attributes.get(search_attributes.PATCHSET)
        if upto is None or (ps is not None and ps <= upto):
            ids.add(wf.id)
    # Visibility lags a little behind starts: also try the IDs we can name.
    last = upto if upto is not None else change.patchset
    for name in pipelines:
        for ps in range(1, last + 1):
            ids.add(check_workflow_id(change.model_copy(update={"patchset": ps}), name,
                                      config.temporal.workflow_id_prefix))
    out = []
    for wid in sorted(ids):
        desc = await describe(client, wid)
        if desc is not None and desc.status == WorkflowExecutionStatus.RUNNING:
            handle = client.get_workflow_handle(wid)
            if note is not None:
                await handle.signal("operator-dequeue", note)
            await handle.cancel()
            out.append(RouteAction("cancelled", wid, reason))
    return out


async def wait_dequeue_reported(client: Client, cancelled: list[RouteAction],
                                timeout: float = DEQUEUE_REPORT_WAIT) -> None:
    """Wait (bounded) until the runs just cancelled have made their dequeue reports, so that the
    change's next run reports its start after them, in Zuul's order ("canceled", then
    "started"). A run that does not answer, or is slow, is not waited for past `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for action in cancelled:
        if action.action != "cancelled" or action.workflow_id is None:
            continue
        handle = client.get_workflow_handle(action.workflow_id)
        while loop.time() < deadline:
            try:
                status = await asyncio.wait_for(handle.query(
                    CheckWorkflow.status, StatusQuery(), result_type=CheckStatus),
                    max(0.1, deadline - loop.time()))
            except (RPCError, TimeoutError, WorkflowQueryFailedError):
                break
            if status.dequeue_reported or status.phase == "done":
                break
            await asyncio.sleep(DEQUEUE_REPORT_POLL)


async def notify_dependents(
    client: Client, config: LockmasterConfig, change: ChangeRef, pipelines: list[str],
) -> list[RouteAction]:
    """A change has a new patchset: the runs testing it as a Depends-On dependency start again
    on it (Zuul re-resolves their dependencies); runs built on it as a git parent keep testing
    the patchset their commit sits on (the run decides)."""
    if not pipelines:
        return []
    query = (f'{search_attributes.NEEDED_CHANGES.name} = "{needed_value(change)}" AND '
             'ExecutionStatus = "Running" AND ('
             + " OR ".join(f'{search_attributes.PIPELINE.name} = "{n}"' for n in pipelines)
             + ")")
    update = DependencyUpdated(connection=change.connection, project=change.project,
                               number=change.number, patchset=change.patchset)
    out = []
    async for wf in client.list_workflows(query):
        handle: WorkflowHandle = client.get_workflow_handle(wf.id)
        try:
            await when_not_busy(lambda h=handle: h.signal(CheckWorkflow.dependency_updated,
                                                          update))
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            continue
        out.append(RouteAction("updated", wf.id, f"dependency {change.key}"))
    return out


def needed_value(change: ChangeRef) -> str:
    """A change as the NeededChanges search attribute lists it."""
    return f"{change.connection}:{change.number}"
