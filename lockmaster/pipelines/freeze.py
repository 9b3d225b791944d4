"""Freeze a project's job graph for one pipeline: the config as it was when the item entered.

The frozen jobs travel in the workflow's input, so a config change never alters a running buildset
and the history says exactly what ran.
"""

from __future__ import annotations

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.build import JobSpec


def freeze_jobs(config: LockmasterConfig, project: str, pipeline: str) -> list[JobSpec]:
    project_config = config.project(project)
    if project_config is None or pipeline not in project_config.pipelines:
        return []
    jobs: list[JobSpec] = []
    for pj in project_config.pipelines[pipeline].project_jobs():
        job = config.job(pj.name)
        jobs.append(
            JobSpec(
                name=job.name,
                run=job.run,
                pre_run=list(job.pre_run),
                post_run=list(job.post_run),
                nodeset=job.labels,
                timeout=job.timeout,
                attempts=job.attempts,
                voting=job.voting if pj.voting is None else pj.voting,
                dependencies=list(pj.dependencies),
                required_projects=list(job.required_projects),
                vars=dict(job.vars),
                testenv=job.testenv,
            )
        )
    return jobs
