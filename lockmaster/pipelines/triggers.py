"""Which pipelines an event concerns (Zuul's trigger and requirement matching)."""

from __future__ import annotations

import re

from lockmaster.config.models import LockmasterConfig, PipelineConfig, Trigger
from lockmaster.model.change import ReviewEvent
from lockmaster.model.state import DependencyInfo


def trigger_matches(trigger: Trigger, event: ReviewEvent) -> bool:
    if trigger.event != event.type:
        return False
    if trigger.comment is not None:
        if event.comment is None or not re.search(trigger.comment, event.comment.strip()):
            return False
    for label, minimum in trigger.approval.items():
        value = event.approvals.get(label)
        if value is None or value < minimum:
            return False
    if trigger.ref is not None and (
        event.refname is None or not re.search(trigger.ref, event.refname)
    ):
        return False
    return True


def requirements_met(pipeline: PipelineConfig, approvals: dict[str, int]) -> bool:
    """The change's current approvals satisfy the pipeline's `require` (e.g. Code-Review +2)."""
    return approvals_meet(pipeline.require, approvals)


def approvals_meet(require: dict[str, int], approvals: dict[str, int]) -> bool:
    return all(approvals.get(label, 0) >= minimum for label, minimum in require.items())


def needed_changes_unfit(infos: list[DependencyInfo], require: dict[str, int]) -> list[str]:
    """The open changes a run needs (all of `infos` but the last, the change itself) that do not
    meet the pipeline's requirements: Zuul enqueues the non-live items ahead under the same
    requirements as the live one, so such a run does not happen."""
    return [
        info.change.key for info in infos[:-1]
        if info.status == "NEW" and not approvals_meet(require, info.approvals)
    ]


def triggered_pipelines(config: LockmasterConfig, event: ReviewEvent) -> list[PipelineConfig]:
    """Pipelines whose triggers match and in which the event's project has jobs."""
    project = config.project(event.project)
    if project is None:
        return []
    return [
        pipeline
        for pipeline in config.pipelines
        if pipeline.name in project.pipelines
        and any(trigger_matches(t, event) for t in pipeline.trigger)
    ]
