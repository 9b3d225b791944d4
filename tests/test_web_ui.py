"""What operators find in Temporal's Web UI, read as the UI reads it (describe, the visibility list,
the `__temporal_workflow_metadata` query behind "Current details"), on the real dev server: a
failed check or publication is a normal completion found by its `Result`, and says FAILED with
the failing job's reason and log; long-lived workflows keep saying what they are after
continue-as-new."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from lockmaster.temporal import search_attributes
from tests.deployment import deployment, make_config, unique_project


async def details(handle: WorkflowHandle) -> list[str]:  # type: ignore[type-arg]
    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return meta.current_details.splitlines()


async def listed(client: Client, query: str, expected: int, timeout: float = 20) -> list[str]:
    """The workflow IDs a saved view with this query lists (visibility is eventually
    consistent: asked again until `expected` are there)."""
    found: list[str] = []
    for _ in range(int(timeout * 10)):
        found = sorted([w.id async for w in client.list_workflows(query)])
        if len(found) >= expected:
            return found
        await asyncio.sleep(0.1)
    return found


async def test_a_failed_check_is_found_by_its_result_and_says_why_with_its_log(
    client: Client, tmp_path: Path
) -> None:
    name = unique_project()
    config = make_config(
        tmp_path,
        projects=[{"name": name, "connection": "local", "pipelines": {"check": {"jobs": [
            "build", {"name": "unit", "dependencies": ["build"]}]}}}],
        jobs=[{"name": "build", "run": "echo compiling; test ! -f BREAK || exit 3",
               "nodeset": "local"},
              {"name": "unit", "run": "true", "nodeset": "local"}],
    )
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        good, good_actions = await dep.upload(name, files={"ok.txt": "ok\n"}, subject="good")
        bad, bad_actions = await dep.upload(name, files={"BREAK": "x\n"}, subject="bad")
        good_id, bad_id = good_actions[0].workflow_id, bad_actions[0].workflow_id
        assert good_id and bad_id
        assert (await dep.outcome(good_id)).result == "SUCCESS"
        outcome = await dep.outcome(bad_id)
        assert outcome.result == "FAILURE"

        # A failed check is a normal completion (COMPLETED), not a workflow failure ...
        handle = dep.handle(bad_id)
        described = await handle.describe()
        assert described.status is WorkflowExecutionStatus.COMPLETED
        assert await described.static_summary() == \
            f"check: {name} change {bad.number},1 (patchset-created)"
        assert described.typed_search_attributes.get(search_attributes.RESULT) == "FAILURE"
        assert described.typed_search_attributes.get(search_attributes.CHANGE) == bad.number
        good_described = await dep.handle(good_id).describe()
        assert good_described.typed_search_attributes.get(search_attributes.RESULT) == "SUCCESS"

        # ... found by the README's saved views: "failed checks" lists it and not the good one;
        # "my change" finds its runs.
        failed = await listed(client, f'WorkflowType = "CheckWorkflow" AND Result = "FAILURE" '
                                      f'AND Project = "{name}"', 1)
        assert failed == [bad_id]
        mine = await listed(client, f'ChangeNumber = {bad.number} AND Project = "{name}"', 1)
        assert mine == [bad_id]

        # Its current details say FAILED, which job, why, and where the log is.
        build = next(b for b in outcome.builds if b.job == "build")
        assert build.log_url
        lines = await details(handle)
        assert lines[0] == f"**FAILED** check: {name} change {bad.number},1"
        assert lines[1] == "failed: build, unit"
        assert lines[2] == (f"- build: **FAILURE** — run exited with status 3 — "
                            f"[log]({build.log_url})")
        assert lines[3] == "- unit: **SKIPPED** — not run: build did not succeed"
        good_lines = await details(dep.handle(good_id))
        assert good_lines[0] == f"**SUCCEEDED** check: {name} change {good.number},1"
        assert good_lines[1].startswith("- build: SUCCESS — [log](http://logs.example.test/")


async def test_a_gate_queue_says_what_it_is_and_what_left_it_after_continue_as_new(
    client: Client, tmp_path: Path
) -> None:
    from lockmaster.starters.operator import enqueue_change
    from tests.test_gate_workflow import gate_config, settle

    name = unique_project()
    config = gate_config(tmp_path, [name], "test ! -f BROKEN && sleep 0.2")
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        changes = [dep.store.upload(name, files={f: "x\n"}, subject=f)
                   for f in ("a", "BROKEN", "c", "d")]
        for change in changes:
            dep.store.vote(change.number, {"Code-Review": 2, "Workflow": 1}, author="core")
            await enqueue_change(client, config, "gate", change.ref(), max_history_events=40)
        wid = f"gate/{name}"
        await settle(dep, wid)
        runs = [w async for w in client.list_workflows(f'WorkflowId = "{wid}"')]
        assert len(runs) >= 2, "the queue never continued as new"

        handle = client.get_workflow_handle(wid)
        described = await handle.describe()
        assert described.status is WorkflowExecutionStatus.RUNNING
        first_run = min(runs, key=lambda r: r.start_time)
        assert described.run_id != first_run.run_id  # the run the Web UI shows is a later one
        # The first run's summary (from its start) is what the later runs' details begin with.
        first = await client.get_workflow_handle(wid, run_id=first_run.run_id).describe()
        assert await first.static_summary() == f"gate queue {name}"
        lines = await details(handle)
        assert lines[0].startswith(f"**gate queue {name}**: empty; window ")
        broken, merged = changes[1], [changes[0], changes[2], changes[3]]
        assert f"Recently left without merging: {broken.number},1 (it failed (gate))" in lines
        assert f"Recently merged: {' '.join(f'{c.number},1' for c in merged)}" in lines


async def test_a_node_pool_says_what_it_is_after_continue_as_new(
    client: Client, tmp_path: Path
) -> None:
    from lockmaster.nodes.pooled import PooledNodes
    from tests.test_nodepool_workflow import local_config, pools

    config = local_config(tmp_path, slots=3)
    async with pools(client, config, max_history_events=40) as ops:
        source = PooledNodes(client, config, config.state_path)
        held = await source.acquire_nodeset(["local"], "held")
        for i in range(12):
            await source.release_nodeset(await source.acquire_nodeset(["other"], f"b{i}"))
        handle = ops.handle(ops.specs[0])
        runs = [w async for w in client.list_workflows(f'WorkflowId = "{handle.id}"')]
        assert len(runs) >= 2, "the pool never continued as new"
        lines: list[str] = []
        for _ in range(100):  # the pool's loop publishes once it has taken the last return in
            lines = await details(handle)
            if "1 in-use" in lines[0] and "0 request(s) waiting" in lines[0]:
                break
            await asyncio.sleep(0.1)
        assert lines[0].startswith("**node pool dev/main (local)**: enabled; 3 node(s)"), lines
        assert "1 in-use" in lines[0], lines
        assert len([line for line in lines[1:] if line.endswith(": in-use")]) == 1, lines
        await source.release_nodeset(held)


async def test_a_failed_publication_is_found_by_its_result_and_says_why(
    client: Client, tmp_path: Path
) -> None:
    from lockmaster.starters.publish import queue_workflow_id, start_publish
    from tests.test_publish_workflow import StandIns, merged, publish_config, publishing, result

    project = f"t{uuid.uuid4().hex[:6]}/hello"
    config = publish_config(tmp_path, project)
    stand_ins = StandIns()
    stand_ins.failing_builds.add(2)
    async with publishing(client, config, stand_ins):
        ok = await start_publish(client, config, merged(project, 1))
        bad = await start_publish(client, config, merged(project, 2))
        assert ok.workflow_id and bad.workflow_id
        assert (await result(client, ok.workflow_id)).ok
        assert not (await result(client, bad.workflow_id)).ok
        failed = await listed(client, f'WorkflowType = "PublishWorkflow" AND Result = "FAILURE" '
                                      f'AND Project = "{project}"', 1)
        assert failed == [bad.workflow_id]
        lines = await details(client.get_workflow_handle(bad.workflow_id))
        assert lines[:3] == [
            f"**FAILED** publish: {project} change 2,1",
            "the build job ended FAILURE",
            "- build: **failed** — the build job ended FAILURE — [log](http://logs.test/2/)",
        ]
        assert (await details(client.get_workflow_handle(ok.workflow_id)))[0].startswith(
            f"**PUBLISHED** publish: {project} change 1,1 as ")
        queue = await details(client.get_workflow_handle(queue_workflow_id(config)))
        assert queue[0].startswith("**publish queue stable**: ")
        assert f"- #2 {project} 2,1: **failed** — the build job ended FAILURE" in queue
