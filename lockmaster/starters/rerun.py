"""Rerunning a single job of a change (seed 003: "retrigger a single job"): a new run of the
change's check workflow (`check/<project>/<change>/<patchset>`) with only that job, on a fresh
speculative state, given the artifacts the jobs it depends on made in the last run (so a system
test reruns against the same test repository without rebuilding it). Reported like any run.
"""

from __future__ import annotations

import shlex

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.audit import note_of
from lockmaster.model.build import JobSpec, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.check import CheckInput, CheckOutcome, ReportLabels
from lockmaster.pipelines.freeze import freeze_jobs
from lockmaster.pipelines.jobgraph import upstream_jobs
from lockmaster.review.base import ChangeNotFound, ReviewDriver
from lockmaster.starters.router_types import RouteAction
from lockmaster.temporal import search_attributes
from lockmaster.temporal.task_queues import Role, task_queue
from lockmaster.workflows.check import CheckWorkflow, check_workflow_id


class RerunError(Exception):
    """The job cannot be rerun (the message says why and what to do instead)."""


async def rerun_target(config: LockmasterConfig, drivers: dict[str, ReviewDriver],
                       project: str, number: int, job: str, pipeline: str = "check",
                       ) -> tuple[ChangeRef, list[JobSpec], JobSpec]:
    """The change's latest patchset, the project's jobs in the pipeline and the job to rerun;
    RerunError (one line: what, where, how to fix it) when there is no such thing to rerun.
    Asks the review system, not Temporal."""
    project_config = config.project(project)
    if project_config is None:
        raise RerunError(f"project {project!r} is not configured (projects: "
                         f"{', '.join(p.name for p in config.projects) or 'none'})")
    try:
        pipe = config.pipeline(pipeline)
    except KeyError:
        raise RerunError(f"pipeline {pipeline!r} is not configured (pipelines: "
                         f"{', '.join(p.name for p in config.pipelines)})") from None
    if pipe.manager != "independent":
        raise RerunError(f"{pipeline} is a gate: its builds belong to the queue; dequeue and "
                         "enqueue the change to run them again")
    conn = project_config.connection
    driver = drivers.get(conn)
    if driver is None:
        raise RerunError(f"connection {conn!r} (of {project}) is not available")
    try:
        info = await driver.get_change(number)
    except ChangeNotFound:
        raise RerunError(f"change {number} does not exist on connection {conn!r} (where "
                         f"{project}'s changes are): check the number") from None
    if info.project != project:
        raise RerunError(f"change {number} is a change of {info.project}, not {project}: "
                         f"lockmaster rerun {info.project} {number} {job}")
    if info.status != "NEW":
        raise RerunError(f"change {number} ({project}) is {info.status.lower()}: only the jobs "
                         "of an open change are rerun")
    jobs = freeze_jobs(config, project, pipeline)
    spec = next((j for j in jobs if j.name == job), None)
    if spec is None:
        raise RerunError(f"job {job!r} is not in {project}'s {pipeline} pipeline (jobs: "
                         f"{', '.join(j.name for j in jobs) or 'none'})")
    return info.ref(), jobs, spec


async def rerun_job(client: Client, config: LockmasterConfig, drivers: dict[str, ReviewDriver],
                    project: str, number: int, job: str, pipeline: str = "check",
                    build_heartbeat_timeout: float = 30.0, *,
                    dry_run: bool = False, by: str | None = None,
                    reason: str | None = None) -> RouteAction:
    """`dry_run`: start nothing; the action's detail is the equivalent `temporal` command.
    `by`, `reason`: the operator and why, in the run's memo (`by`, `reason`) and summary."""
    ref, jobs, spec = await rerun_target(config, drivers, project, number, job, pipeline)
    pipe = config.pipeline(pipeline)
    wid = check_workflow_id(ref, pipeline, config.temporal.workflow_id_prefix)
    handle = client.get_workflow_handle(wid, result_type=CheckOutcome)
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RerunError(f"patchset {ref.key} has not run in {pipeline} ({wid}); "
                             "recheck it first") from exc
        raise
    if described.status == WorkflowExecutionStatus.RUNNING:
        raise RerunError(f"{wid} is still running; rerun the job once it has reported")
    try:
        last = await handle.result()
    except Exception as exc:  # failed, cancelled, terminated: nothing to take artifacts from
        last = None
        if upstream_jobs(jobs, job):
            raise RerunError(f"the last run of {wid} did not finish ({exc}); recheck the "
                             "change instead") from exc
    wanted = upstream_jobs(jobs, job)
    builds = [b for b in (last.builds if last else []) if b.job in wanted
              and b.result is Result.SUCCESS]
    # A rerun's outcome has only the rerun job's build: what it was given carries over.
    carried = [a for a in (last.given_artifacts if last else []) if a.job in wanted
               and a.job not in {b.job for b in builds}]
    given = [*carried, *(a for b in builds for a in b.artifacts)]
    missing = wanted - {b.job for b in builds} - {a.job for a in carried}
    if missing:
        raise RerunError(f"{job} needs {', '.join(sorted(missing))}, which did not succeed in "
                         "the last run; recheck the change instead")
    alone = spec.model_copy(update={"dependencies": [], "aborted_by": []})
    inp = CheckInput(
        change=ref, pipeline=pipeline, jobs=[alone],
        labels=ReportLabels(start=pipe.start.labels if pipe.start else None,
                            success=pipe.success.labels, failure=pipe.failure.labels,
                            status_url=config.web.url),
        trigger=f"rerun {job}", task_queue_prefix=config.temporal.task_queue_prefix,
        precedence=pipe.node_precedence, build_heartbeat_timeout=build_heartbeat_timeout,
        given_artifacts=given)
    queue = task_queue(config.temporal.task_queue_prefix, Role.ORCHESTRATOR)
    note = note_of(by, reason)
    said = f" ({note.describe('asked')})" if note else ""
    if dry_run:
        return RouteAction("dry-run", wid, (
            f"temporal workflow start --type CheckWorkflow --task-queue {queue} "
            f"--workflow-id {shlex.quote(wid)} --input "
            f"{shlex.quote(inp.model_dump_json(exclude_defaults=True))}"))
    started = await client.start_workflow(
        CheckWorkflow.run, inp, id=wid, task_queue=queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(search_attributes.pairs_for_change(
            connection=ref.connection, project=ref.project, branch=ref.branch,
            change=ref.number, patchset=ref.patchset, pipeline=pipeline)),
        memo={"trigger": f"rerun {job}",
              **({"by": note.by, "reason": note.reason} if note else {})},
        static_summary=f"{pipeline}: {ref.project} change {ref.key}: rerun of {job}{said}")
    return RouteAction("started", started.id,
                       f"rerun of {job}{said} (run {started.result_run_id})")
