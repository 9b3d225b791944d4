"""Freeze a project's job graph for one pipeline: the config as it was when the item entered.

The frozen jobs travel in the workflow's input, so a config change never alters a running buildset
and the history says exactly what ran.
"""

from __future__ import annotations

from lockmaster.config.models import JobConfig, LockmasterConfig, PipelineConfig, ReportAction
from lockmaster.model.build import JobSpec
from lockmaster.model.check import ReportLabels
from lockmaster.model.gate import FrozenJobs
from lockmaster.packaging.steps import package_command


def freeze_jobs(config: LockmasterConfig, project: str, pipeline: str) -> list[JobSpec]:
    project_config = config.project(project)
    if project_config is None or pipeline not in project_config.pipelines:
        return []
    jobs: list[JobSpec] = []
    for pj in project_config.pipelines[pipeline].project_jobs():
        job = freeze_job(config, pj.name)
        if pj.voting is not None:
            job.voting = pj.voting
        job.dependencies = list(pj.dependencies)
        job.aborted_by = list(pj.aborted_by)
        jobs.append(job)
    return jobs


def freeze_pipeline(config: LockmasterConfig, project: str, pipeline: str) -> FrozenJobs:
    """The project's job graph in the pipeline and how it runs (fail-fast)."""
    project_config = config.project(project)
    ppipe = project_config.pipelines.get(pipeline) if project_config else None
    return FrozenJobs(jobs=freeze_jobs(config, project, pipeline),
                      fail_fast=bool(ppipe and ppipe.fail_fast))


def queue_job_graphs(config: LockmasterConfig, projects: list[str],
                     pipeline: str) -> dict[str, FrozenJobs]:
    """The job graphs of every project of a shared queue that runs in the pipeline."""
    out = {}
    for name in projects:
        project_config = config.project(name)
        if project_config is not None and pipeline in project_config.pipelines:
            out[name] = freeze_pipeline(config, name, pipeline)
    return out


def report_labels(pipeline: PipelineConfig, status_url: str | None = None) -> ReportLabels:
    """The pipeline's reporters as a workflow carries them: labels per action, the
    pipeline's own first lines where it gives them, and where the status page is (web.url)."""

    def labels(action: ReportAction | None) -> dict[str, int] | None:
        return dict(action.labels) if action is not None else None

    actions = {"start": pipeline.start, "success": pipeline.success,
               "failure": pipeline.failure, "enqueue": pipeline.enqueue,
               "dequeue": pipeline.dequeue}
    return ReportLabels(
        start=labels(pipeline.start), success=dict(pipeline.success.labels),
        failure=dict(pipeline.failure.labels), enqueue=labels(pipeline.enqueue),
        dequeue=labels(pipeline.dequeue),
        messages={name: action.message for name, action in actions.items()
                  if action is not None and action.message},
        status_url=status_url,
    )


def freeze_job(config: LockmasterConfig, name: str) -> JobSpec:
    """One job as configured, outside any graph (no dependencies)."""
    job = config.job(name)
    return JobSpec(
        name=job.name,
        run=job_command(job, config),
        pre_run=list(job.pre_run),
        post_run=list(job.post_run),
        nodeset=job.labels,
        timeout=job.timeout,
        node_wait_timeout=job.node_wait_timeout,
        te_wait_timeout=job.te_wait_timeout,
        timeout_includes_te_wait=job.timeout_includes_te_wait,
        attempts=job.attempts,
        voting=job.voting,
        required_projects=list(job.required_projects),
        vars={k: v for k, v in job.vars.items() if isinstance(v, str)},
        # Secrets by name only: a job graph is frozen into workflow inputs (histories).
        secret_vars={k: v.secret for k, v in job.vars.items() if not isinstance(v, str)},
        testenv=job.testenv,
        hold_following_changes=job.hold_following_changes,
        provides=list(job.provides),
        requires=list(job.requires),
    )


def job_command(job: JobConfig, config: LockmasterConfig) -> str:
    """The job's shell command: its own `run`, after its packaging step if it has one."""
    if job.package is None:
        return job.run
    step = package_command(job.package, config)
    return f"{step} && {{ {job.run.strip()}\n}}" if job.run.strip() else step
