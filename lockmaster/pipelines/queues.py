"""Which shared queue a project's changes are gated in, and what the queue workflow starts with."""

from __future__ import annotations

from lockmaster.config.models import LockmasterConfig, PipelineConfig
from lockmaster.model.check import ReportLabels
from lockmaster.model.gate import GateInput, QueueState


def queue_name(config: LockmasterConfig, project: str) -> str:
    """Projects naming the same `queue` are gated together; a project without one is alone."""
    p = config.project(project)
    return (p.queue if p and p.queue else project)


def queue_projects(config: LockmasterConfig, queue: str) -> list[str]:
    return sorted(p.name for p in config.projects if (p.queue or p.name) == queue)


def gate_input(
    config: LockmasterConfig, pipeline: PipelineConfig, queue: str,
    *, build_heartbeat_timeout: float = 30.0, max_history_events: int | None = None,
) -> GateInput:
    return GateInput(
        state=QueueState(
            queue=queue, pipeline=pipeline.name, window=pipeline.window,
            window_floor=pipeline.window_floor,
            window_increase_amount=pipeline.window_increase_amount,
            window_decrease_factor=pipeline.window_decrease_factor,
            task_queue_prefix=config.temporal.task_queue_prefix,
            workflow_id_prefix=config.temporal.workflow_id_prefix,
            build_heartbeat_timeout=build_heartbeat_timeout,
        ),
        labels=ReportLabels(
            start=pipeline.start.labels if pipeline.start else None,
            success=pipeline.success.labels, failure=pipeline.failure.labels,
        ),
        require=dict(pipeline.require),
        projects=queue_projects(config, queue),
        max_history_events=max_history_events,
        precedence=pipeline.node_precedence,
    )
