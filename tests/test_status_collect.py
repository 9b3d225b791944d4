"""`lockmaster status` collects every running pipeline workflow's state; one whose worker is
down must neither hide from it nor hold it for Temporal's own query timeout (about 30 s)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.client import Client

from lockmaster.starters.status import collect
from tests.deployment import deployment, unique_project
from tests.test_gate_workflow import approve, gate_config, wait_items


async def test_a_queue_whose_worker_is_down_is_shown_as_not_answering(
        client: Client, tmp_path: Path) -> None:
    gone, alive = unique_project(), unique_project()
    config = gate_config(tmp_path / "gone", [gone], "sleep 30")
    async with deployment(client, config) as dep:
        dep.store.create_project(gone, {"README": "x\n"})
        change = dep.store.upload(gone, files={"a": "a\n"}, subject="a")
        await approve(dep, change.number)
        await wait_items(dep, f"gate/{gone}", 1)
    # Its workers have stopped; the queue's workflow still runs.
    config = gate_config(tmp_path / "alive", [alive], "sleep 30")
    async with deployment(client, config) as dep:
        dep.store.create_project(alive, {"README": "x\n"})
        change = dep.store.upload(alive, files={"b": "b\n"}, subject="b")
        await approve(dep, change.number)
        await wait_items(dep, f"gate/{alive}", 1)
        pipelines = await asyncio.wait_for(collect(client, config, timeout=2.0), 20)
    gate = next(p for p in pipelines if p.pipeline == "gate")
    assert [q.queue for q in gate.queues if q.queue in (gone, alive)] == [alive]
    assert any(u.startswith(f"gate/{gone}: ") for u in gate.unanswered), gate.unanswered
