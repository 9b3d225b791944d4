"""Collect every pipeline's state for `lockmaster status` (Zuul's status page, in a terminal)."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.base import Model
from lockmaster.model.check import CheckStatus
from lockmaster.model.check import StatusQuery as CheckStatusQuery
from lockmaster.model.gate import QueueStatus, StatusQuery


class PipelineStatus(Model):
    pipeline: str
    manager: str
    queues: list[QueueStatus] = []
    checks: list[CheckStatus] = []


async def collect(client: Client, config: LockmasterConfig) -> list[PipelineStatus]:
    prefix = config.temporal.workflow_id_prefix
    out = {p.name: PipelineStatus(pipeline=p.name, manager=p.manager) for p in config.pipelines}
    query = 'ExecutionStatus = "Running"'
    handles = []
    async for wf in client.list_workflows(query):
        if not wf.id.startswith(prefix):
            continue
        handles.append((wf.workflow_type, client.get_workflow_handle(wf.id)))

    async def one(kind: str, handle) -> None:  # type: ignore[no-untyped-def]
        try:
            if kind == "GateQueueWorkflow":
                status = await handle.query("status", StatusQuery(), result_type=QueueStatus)
                if status.pipeline in out:
                    out[status.pipeline].queues.append(status)
            elif kind == "CheckWorkflow":
                status = await handle.query("status", CheckStatusQuery(), result_type=CheckStatus)
                if status.pipeline in out:
                    out[status.pipeline].checks.append(status)
        except Exception:
            return

    await asyncio.gather(*(one(kind, h) for kind, h in handles))
    for status in out.values():
        status.queues.sort(key=lambda q: q.queue)
        status.checks.sort(key=lambda c: (c.change.project, c.change.number))
    return list(out.values())
