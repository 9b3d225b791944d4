"""What a gate queue looks like from outside: the `status` query's answer, built from the queue's
state (pure; the Web UI's current details are rendered from the same view)."""

from __future__ import annotations

from collections.abc import Mapping

from lockmaster.model.build import Result
from lockmaster.model.gate import GateItem, ItemView, JobView, QueueState, QueueStatus
from lockmaster.pipelines import gate_window
from lockmaster.pipelines.gate_queue import GateQueue
from lockmaster.pipelines.jobgraph import skip_reason

RECENT = 5  # the changes that recently left the queue (merged or not) the view shows


def job_views(item: GateItem, now: float, estimates: Mapping[str, float]) -> list[JobView]:
    jobs = []
    for job in item.jobs:
        attempts = [b for b in item.builds if b.job == job.name]
        last = attempts[-1] if attempts else None
        result = item.job_results.get(job.name)
        if result is not None:
            state = result.value
        elif last is not None and last.result is None:
            state = "running"
        else:
            state = "waiting"
        reason = None
        if result is Result.SKIPPED and last is None:
            reason = skip_reason(job, item.job_results)
        elif last is not None and last.result not in (None, Result.SUCCESS):
            reason = last.message
        jobs.append(JobView(
            name=job.name, voting=job.voting, state=state, attempt=len(attempts),
            log_url=last.log_url if last else None,
            elapsed=(now - last.started) if last and last.started and last.result is None
            else None,
            estimated=estimates.get(job.name), reason=reason,
            started=last.started if last and last.result is None else None,
        ))
    return jobs


def item_phase(item: ItemView) -> str:
    """Where an item stands, in the words both the queue's current details (Web UI) and the
    status page use: one home, so the two always agree."""
    if item.merge == "conflict":
        return "merge conflict"
    if item.failing:
        return "failing"
    if not item.active:
        return "waiting outside the window"
    if item.merge in ("none", "pending"):
        return "merging"
    if item.jobs and all(j.state.isupper() for j in item.jobs):
        return "succeeded, merging"
    return "running" if any(j.state == "running" for j in item.jobs) else "waiting for nodes"


def queue_status(state: QueueState, now: float, *, idle: bool, busy: bool) -> QueueStatus:
    items = []
    for index, item in enumerate(state.items):
        items.append(ItemView(
            change=item.key, project=item.change.project, branch=item.change.branch,
            active=gate_window.is_active(state, index), failing=GateQueue.failing(item),
            changes=" ".join(c.key for c in item.changes), merge=item.merge,
            enqueued_at=item.enqueued_at, jobs=job_views(item, now, state.job_seconds),
            merge_error=item.merge_error if item.merge == "conflict" else None,
            enqueued_by=item.enqueued_by, promoted_by=item.promoted_by,
        ))
    return QueueStatus(queue=state.queue, pipeline=state.pipeline, window=state.window,
                       idle=idle, busy=busy, items=items,
                       recently_left=dict(list(state.left.items())[-RECENT:]),
                       recently_merged=state.merged_keys[-RECENT:])
