"""Freeze a project's job graph for one pipeline: the config as it was when the item entered.

The frozen jobs travel in the workflow's input, so a config change never alters a running buildset
and the history says exactly what ran.
"""

from __future__ import annotations

from lockmaster.config.models import JobConfig, LockmasterConfig
from lockmaster.model.build import JobSpec
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
        attempts=job.attempts,
        voting=job.voting,
        required_projects=list(job.required_projects),
        vars=dict(job.vars),
        testenv=job.testenv,
    )


def job_command(job: JobConfig, config: LockmasterConfig) -> str:
    """The job's shell command: its own `run`, after its packaging step if it has one."""
    if job.package is None:
        return job.run
    step = package_command(job.package, config)
    return f"{step} && {{ {job.run.strip()}\n}}" if job.run.strip() else step
