"""Starting and steering publication: a merged change of a publishing project is enqueued in the
publish queue (merge order) and gets its `publish/<project>/<change>` workflow, which is told
the gate queues that may have tested it (their build is promoted when it tested the merged
tree); operators look at both and retrigger single steps."""

from __future__ import annotations

import json
import shlex

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.audit import note_of
from lockmaster.model.change import ChangeRef
from lockmaster.model.publish import (
    STABLE,
    Enqueue,
    Provenance,
    PublishInput,
    PublishStatus,
    PublishStatusQuery,
    PublishStep,
    QueueInput,
    QueueStatus,
    QueueStatusQuery,
    RetriggerAnswer,
)
from lockmaster.pipelines.freeze import freeze_job
from lockmaster.pipelines.queues import queue_name
from lockmaster.starters.operator import gate_id_for
from lockmaster.starters.router_types import RouteAction
from lockmaster.temporal import search_attributes
from lockmaster.temporal.client import describe
from lockmaster.temporal.task_queues import Role, task_queue
from lockmaster.workflows.publish import PublishWorkflow, publish_id
from lockmaster.workflows.publish_queue import PublishQueueWorkflow, publish_queue_id


class PublishError(Exception):
    """An operator's request that cannot be carried out (the message says why)."""


def queue_workflow_id(config: LockmasterConfig) -> str:
    return publish_queue_id(STABLE, config.temporal.workflow_id_prefix)


def change_workflow_id(config: LockmasterConfig, project: str, change: int) -> str:
    return publish_id(project, change, config.temporal.workflow_id_prefix)


def gate_ids(config: LockmasterConfig, change: ChangeRef) -> list[str]:
    """The gate queues that may have tested and submitted `change`: its queue in every
    dependent pipeline the project takes part in."""
    project = config.project(change.project)
    queue = queue_name(config, change.project, change.branch)
    return [gate_id_for(config, p.name, queue) for p in config.pipelines
            if p.manager == "dependent" and project is not None and p.name in project.pipelines]


def publish_input(config: LockmasterConfig, change: ChangeRef, *,
                  build_heartbeat_timeout: float = 30.0, only: str | None = None,
                  snapshot: str | None = None, packages_url: str | None = None,
                  earlier_steps: list[PublishStep] | None = None,
                  provenance: Provenance | None = None) -> PublishInput:
    project = config.project(change.project)
    assert project is not None and project.publish is not None
    return PublishInput(
        change=change, job=freeze_job(config, project.publish.build_job),
        queue_id=queue_workflow_id(config),
        mirrors=[m.name for m in config.publishing.mirrors],
        task_queue_prefix=config.temporal.task_queue_prefix,
        build_heartbeat_timeout=build_heartbeat_timeout,
        sync_heartbeat_timeout=config.publishing.sync_heartbeat_timeout,
        only=only, snapshot=snapshot, packages_url=packages_url,
        earlier_steps=list(earlier_steps or []) if only is not None else [],
        gate_ids=gate_ids(config, change),
        provenance=provenance if only is not None else None)


async def enqueue_merge(client: Client, config: LockmasterConfig, change: ChangeRef) -> None:
    """Take the merge's place in the queue (signal-with-start: the queue starts with the first
    merge ever published)."""
    wid = change_workflow_id(config, change.project, change.number)
    await client.start_workflow(
        PublishQueueWorkflow.run, QueueInput(repository=STABLE), id=queue_workflow_id(config),
        task_queue=task_queue(config.temporal.task_queue_prefix, Role.ORCHESTRATOR),
        start_signal="enqueue",
        start_signal_args=[Enqueue(workflow_id=wid, change=f"{change.project} {change.key}")],
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary="publish queue: merged changes into the stable repository, in merge "
                       "order",
    )


async def start_publish(client: Client, config: LockmasterConfig, change: ChangeRef, *,
                        build_heartbeat_timeout: float = 30.0) -> RouteAction:
    """A merged change of a publishing project: enqueue it, then start its workflow (the same
    merge announced twice finds the first run)."""
    if change.commit is None:
        return RouteAction("ignored", detail=f"publish: change {change.key} names no merged "
                                             "commit")
    wid = change_workflow_id(config, change.project, change.number)
    existing = await describe(client, wid)
    if existing is not None and existing.status == WorkflowExecutionStatus.RUNNING:
        return RouteAction("already-running", wid, "its publication is running")
    if existing is not None and (await existing.memo()).get("commit") == change.commit:
        return RouteAction("duplicate", wid, "this merge was published already")
    await enqueue_merge(client, config, change)
    handle = await client.start_workflow(
        PublishWorkflow.run,
        publish_input(config, change, build_heartbeat_timeout=build_heartbeat_timeout),
        id=wid, task_queue=task_queue(config.temporal.task_queue_prefix, Role.ORCHESTRATOR),
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=_attributes(change),
        memo={"commit": change.commit},
        static_summary=f"publish: {change.project} change {change.number} "
                       f"({change.commit[:12]}) to the stable repository and "
                       f"{len(config.publishing.mirrors)} mirror(s)",
    )
    return RouteAction("started", handle.id, f"run {handle.result_run_id}")


def _attributes(change: ChangeRef) -> TypedSearchAttributes:
    return TypedSearchAttributes(search_attributes.pairs_for_change(
        connection=change.connection, project=change.project, branch=change.branch,
        change=change.number, patchset=change.patchset, pipeline="publish"))


class Publications:
    """What operators do: look at a change's publication or the queue; retrigger a step."""

    def __init__(self, client: Client, config: LockmasterConfig) -> None:
        self.client = client
        self.config = config

    def _change(self, project: str, change: int) -> WorkflowHandle:
        if self.config.project(project) is None:
            raise PublishError(f"project {project!r} is not configured")
        return self.client.get_workflow_handle(change_workflow_id(self.config, project, change))

    async def show(self, project: str, change: int) -> PublishStatus:
        handle = self._change(project, change)
        try:
            return await handle.query("status", PublishStatusQuery(), result_type=PublishStatus)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise PublishError(f"change {change} of {project} has not been published "
                                   f"(no workflow {handle.id})") from exc
            raise PublishError(f"cannot ask {handle.id}: {exc}") from exc

    async def queue(self) -> QueueStatus:
        handle = self.client.get_workflow_handle(queue_workflow_id(self.config))
        try:
            return await handle.query("status", QueueStatusQuery(), result_type=QueueStatus)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return QueueStatus(repository=STABLE, entries=[])
            raise PublishError(f"cannot ask {handle.id}: {exc}") from exc

    async def retrigger(self, project: str, change: int, step: str, *,
                        dry_run: bool = False, by: str | None = None,
                        reason: str | None = None) -> RetriggerAnswer:
        """Run one step of a finished publication again: `publish` (a new snapshot with the
        same packages, then every mirror) or `sync:<mirror>`; `build` reruns everything.
        `dry_run`: start nothing; the answer is the equivalent `temporal` command line.
        `by`, `reason`: the operator and why, in the new run's memo and summary."""
        mirrors = [m.name for m in self.config.publishing.mirrors]
        allowed = ["build", "publish", *(f"sync:{m}" for m in mirrors)]
        if step not in allowed:
            raise PublishError(f"no step {step!r}; steps: {', '.join(allowed)}")
        status = await self.show(project, change)
        handle = self._change(project, change)
        if not status.done:
            raise PublishError(f"{handle.id} is still running; wait for it to end (a failing "
                               "mirror sync is retried by itself until the mirror is back)")
        if step.startswith("sync:") and status.snapshot is None:
            raise PublishError(f"change {change} was never published into the stable "
                               "repository; retrigger `publish` (or `build`) first")
        packages_url = status.packages_url  # carried into the new run: later retriggers
        if step == "publish":
            if packages_url is None:
                raise PublishError(f"change {change} has no successful build to publish; "
                                   "retrigger `build`")
        change_ref = status.change
        only = None if step == "build" else step
        # A promoted gate build stays one: the publisher checks it as such.
        inp = publish_input(self.config, change_ref, only=only, snapshot=status.snapshot,
                            packages_url=packages_url, earlier_steps=status.steps,
                            provenance=status.provenance)
        if dry_run:
            queue = task_queue(self.config.temporal.task_queue_prefix, Role.ORCHESTRATOR)
            command = (f"temporal workflow start --type PublishWorkflow --task-queue {queue} "
                       f"--workflow-id {shlex.quote(handle.id)} --input "
                       f"{shlex.quote(inp.model_dump_json(exclude_defaults=True))}")
            if only is None:  # a whole rerun takes a new place in the queue first
                place = json.dumps({"workflow_id": handle.id,
                                    "change": f"{project} {change_ref.key}"})
                command = (f"temporal workflow signal --workflow-id "
                           f"{shlex.quote(queue_workflow_id(self.config))} --name enqueue "
                           f"--input {shlex.quote(place)}\n{command}")
            return RetriggerAnswer(ok=True, message=command, workflow_id=handle.id)
        note = note_of(by, reason)
        said = f" ({note.describe('retriggered')})" if note else ""
        if only is None:
            await enqueue_merge(self.client, self.config, change_ref)
        new = await self.client.start_workflow(
            PublishWorkflow.run, inp, id=handle.id,
            task_queue=task_queue(self.config.temporal.task_queue_prefix, Role.ORCHESTRATOR),
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=_attributes(change_ref),
            memo={"commit": change_ref.commit,
                  **({"by": note.by, "reason": note.reason} if note else {})},
            static_summary=f"publish (retrigger {step}): {project} change {change}{said}")
        return RetriggerAnswer(ok=True, message=f"{step} of {project} change {change} runs "
                                                f"again{said} ({new.id}, run "
                                                f"{new.result_run_id})",
                               workflow_id=new.id)
