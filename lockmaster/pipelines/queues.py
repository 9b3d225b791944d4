"""Which shared queue a project's changes are gated in, and what the queue workflow starts with
(and is sent by `lockmaster config apply`: queue_reconfigure).

Projects naming the same `queue` are gated together; a project without one is alone in a queue
named after it. A queue declared `per-branch` (under `queues:`) is one queue per branch,
named `<queue>@<branch>` (Zuul's per-branch queues); otherwise one queue spans the branches.
"""

from __future__ import annotations

from lockmaster.config.models import LockmasterConfig, PipelineConfig
from lockmaster.model.gate import GateInput, QueueReconfigure, QueueState
from lockmaster.pipelines.freeze import report_labels
from lockmaster.pipelines.gate_window import WINDOW_FIELDS, window_settings

BRANCH_SEPARATOR = "@"


def base_queue(config: LockmasterConfig, project: str) -> str:
    """The queue's name as configured (without a branch)."""
    p = config.project(project)
    return p.queue if p and p.queue else project


def per_branch(config: LockmasterConfig, queue: str) -> bool:
    own = next((q for q in config.queues if q.name == queue), None)
    return bool(own and own.per_branch)


def queue_name(config: LockmasterConfig, project: str, branch: str | None = None) -> str:
    """The queue a change of `project` on `branch` is gated in."""
    name = base_queue(config, project)
    if branch and per_branch(config, name):
        return f"{name}{BRANCH_SEPARATOR}{branch}"
    return name


def split_queue(queue: str) -> tuple[str, str | None]:
    """(configured name, branch) of a queue name."""
    name, sep, branch = queue.rpartition(BRANCH_SEPARATOR)
    return (name, branch) if sep and name else (queue, None)


def queue_projects(config: LockmasterConfig, queue: str) -> list[str]:
    name, _ = split_queue(queue)
    return sorted(p.name for p in config.projects if (p.queue or p.name) == name)


def queue_reconfigure(config: LockmasterConfig, pipeline: PipelineConfig,
                      queue: str) -> QueueReconfigure:
    """The settings a queue takes from the configuration: what it starts with (gate_input) and
    what a running one is sent by `lockmaster config apply` (signal `reconfigure`)."""
    name, branch = split_queue(queue)
    return QueueReconfigure(
        queue=queue, pipeline=pipeline.name,
        labels=report_labels(pipeline, config.web.url),
        require=dict(pipeline.require),
        projects=queue_projects(config, queue),
        precedence=pipeline.node_precedence,
        dequeue_on_new_patchset=pipeline.dequeue_on_new_patchset,
        branch=branch,
        layout_projects=sorted(p.name for p in config.projects),
        **window_settings(config, pipeline, name),  # type: ignore[arg-type]
    )


def queue_gone(config: LockmasterConfig, pipeline: str, queue: str) -> str | None:
    """Why a (running) queue is no longer one the configuration has, or None when it is."""
    pipe = next((p for p in config.pipelines if p.name == pipeline), None)
    if pipe is None:
        return f"pipeline {pipeline} is no longer configured"
    if pipe.manager != "dependent":
        return f"pipeline {pipeline} is no longer a dependent pipeline"
    name, branch = split_queue(queue)
    if not queue_projects(config, queue):
        return f"no project is gated in queue {name} any more"
    if per_branch(config, name) and branch is None:
        return f"queue {name} is per-branch now (its queues are {name}{BRANCH_SEPARATOR}<branch>)"
    if branch is not None and not per_branch(config, name):
        return f"queue {name} is no longer per-branch (its changes go to {name})"
    return None


def gate_input(
    config: LockmasterConfig, pipeline: PipelineConfig, queue: str,
    *, build_heartbeat_timeout: float = 30.0, max_history_events: int | None = None,
    review_round: float | None = None,
) -> GateInput:
    settings = queue_reconfigure(config, pipeline, queue)
    window = settings.model_dump(include=set(WINDOW_FIELDS))
    return GateInput(
        state=QueueState(
            queue=queue, pipeline=pipeline.name, **window, window_configured=settings.window,
            task_queue_prefix=config.temporal.task_queue_prefix,
            workflow_id_prefix=config.temporal.workflow_id_prefix,
            build_heartbeat_timeout=build_heartbeat_timeout,
        ),
        labels=settings.labels,
        require=settings.require,
        projects=settings.projects,
        max_history_events=max_history_events,
        precedence=settings.precedence,
        dequeue_on_new_patchset=settings.dequeue_on_new_patchset,
        branch=settings.branch,
        layout_projects=settings.layout_projects,
        **({"review_round": review_round} if review_round is not None else {}),
    )
