"""Collect every pipeline's state for `lockmaster status` (Zuul's status page, in a terminal)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta

from temporalio.client import Client

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.base import Model
from lockmaster.model.check import CheckStatus
from lockmaster.model.check import StatusQuery as CheckStatusQuery
from lockmaster.model.gate import QueueStatus, StatusQuery
from lockmaster.temporal.busy import when_not_busy

# How long one workflow may take to answer. A workflow whose worker is down would otherwise
# hold the whole status for Temporal's own query timeout (about 30 s).
QUERY_TIMEOUT = 10.0


class PipelineStatus(Model):
    pipeline: str
    manager: str
    queues: list[QueueStatus] = []
    checks: list[CheckStatus] = []
    # Running workflows of this pipeline that did not answer: "<workflow id>: <why>".
    unanswered: list[str] = []


def _pipeline_of(out: dict[str, PipelineStatus], kind: str, workflow_id: str,
                 prefix: str) -> PipelineStatus | None:
    """The pipeline a workflow belongs to, from its ID (workflows/ids.py): a check's ID starts
    with its pipeline; a queue's with `gate/` (the dependent pipeline's)."""
    first = workflow_id[len(prefix):].split("/", 1)[0]
    if first in out:
        return out[first]
    if kind == "GateQueueWorkflow":
        return next((p for p in out.values() if p.manager == "dependent"), None)
    return None


async def collect(client: Client, config: LockmasterConfig,
                  timeout: float = QUERY_TIMEOUT,
                  skip: Mapping[str, str] | None = None) -> list[PipelineStatus]:
    """`skip`: workflow id -> why, of workflows known not to answer just now (the status page
    asks them again later rather than wait for them on every refresh): listed as unanswered
    without asking."""
    prefix = config.temporal.workflow_id_prefix
    skip = skip or {}
    rpc_timeout = timedelta(seconds=timeout)
    out = {p.name: PipelineStatus(pipeline=p.name, manager=p.manager) for p in config.pipelines}
    query = 'ExecutionStatus = "Running"'
    handles = []
    async for wf in client.list_workflows(query):
        if not wf.id.startswith(prefix):
            continue
        if wf.id in skip:
            pipeline = _pipeline_of(out, wf.workflow_type or "", wf.id, prefix)
            if pipeline is not None:
                pipeline.unanswered.append(f"{wf.id}: {skip[wf.id]}")
            continue
        handles.append((wf.workflow_type, client.get_workflow_handle(wf.id)))

    async def one(kind: str, handle) -> None:  # type: ignore[no-untyped-def]
        try:
            if kind == "GateQueueWorkflow":
                status = await when_not_busy(lambda: handle.query(
                    "status", StatusQuery(), result_type=QueueStatus, rpc_timeout=rpc_timeout),
                    patience=timeout)
                if status.pipeline in out:
                    out[status.pipeline].queues.append(status)
            elif kind == "CheckWorkflow":
                status = await when_not_busy(lambda: handle.query(
                    "status", CheckStatusQuery(), result_type=CheckStatus,
                    rpc_timeout=rpc_timeout), patience=timeout)
                if status.pipeline in out:
                    out[status.pipeline].checks.append(status)
        except Exception as exc:  # said, not hidden: its worker may be down
            pipeline = _pipeline_of(out, kind, handle.id, prefix)
            if pipeline is not None:
                why = str(exc) or type(exc).__name__
                pipeline.unanswered.append(f"{handle.id}: {why}")

    await asyncio.gather(*(one(kind, h) for kind, h in handles))
    for status in out.values():
        status.unanswered.sort()
        status.queues.sort(key=lambda q: q.queue)
        status.checks.sort(key=lambda c: (c.change.project, c.change.number))
    return list(out.values())
