"""`lockmaster status` collects every running pipeline workflow's state; one whose worker is
down must neither hide from it nor hold it for Temporal's own query timeout (about 30 s)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.client import Client

from lockmaster.starters.status import collect
from tests.deployment import Deployment, deployment, unique_project
from tests.test_gate_workflow import approve, gate_config, wait_items


async def a_queue_of_one(dep: Deployment, project: str) -> None:
    """`project`'s queue, running one approved change's build."""
    dep.store.create_project(project, {"README": "x\n"})
    change = dep.store.upload(project, files={"a": "a\n"}, subject="a")
    await approve(dep, change.number)
    await wait_items(dep, f"gate/{project}", 1)


async def test_a_queue_whose_worker_is_down_is_shown_as_not_answering(
        client: Client, tmp_path: Path) -> None:
    gone, alive = unique_project(), unique_project()
    async with deployment(client, gate_config(tmp_path / "gone", [gone], "sleep 30")) as dep:
        await a_queue_of_one(dep, gone)
    # Its workers have stopped; the queue's workflow still runs.
    config = gate_config(tmp_path / "alive", [alive], "sleep 30")
    async with deployment(client, config) as dep:
        await a_queue_of_one(dep, alive)
        pipelines = await asyncio.wait_for(collect(client, config, timeout=2.0), 20)
    gate = next(p for p in pipelines if p.pipeline == "gate")
    assert [q.queue for q in gate.queues if q.queue in (gone, alive)] == [alive]
    assert any(u.startswith(f"gate/{gone}: ") for u in gate.unanswered), gate.unanswered
