"""Replay recorded histories of real check runs through the current workflow code: a change that
would break running workflows (non-determinism) fails here.

Re-record (only when an incompatible change is intended and versioned):
    LOCKMASTER_RECORD_HISTORIES=1 .venv/bin/pytest tests/test_replay.py -k record
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from lockmaster.workers.common import workflow_runner
from lockmaster.workers.orchestrator import WORKFLOWS
from tests.deployment import deployment, make_config, unique_project
from tests.test_check_workflow import _wait_running

HISTORIES = Path(__file__).parent / "histories"


def recorded() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


def recorded_ids() -> dict[str, str]:
    """The recorded workflow ID of each history that needs it (`<name>: <id>` lines)."""
    path = HISTORIES / "workflow-ids.txt"
    if not path.exists():
        return {}
    pairs = (line.split(": ", 1) for line in path.read_text().splitlines() if line.strip())
    return {name: wid for name, wid in pairs}


def save(name: str, history: Any, workflow_id: str) -> None:
    (HISTORIES / f"{name}.json").write_text(history.to_json())
    ids = {**recorded_ids(), name: workflow_id}
    (HISTORIES / "workflow-ids.txt").write_text(
        "".join(f"{k}: {v}\n" for k, v in sorted(ids.items())))


def test_there_are_recorded_histories() -> None:
    names = {p.stem for p in recorded()}
    assert {"check-success", "check-failure-skip-retry", "check-cancelled",
            "check-merge-conflict", "gate-queue", "gate-queue-batches", "nodepool-cloud",
            "te-broker",
            "publish-change", "publish-queue", "gate-stack-superseded-run1",
            "gate-stack-superseded-run2", "check-dependency-restart-run1",
            "check-dependency-restart-run2", "publish-promoted", "gate-promoted",
            "gate-detached-run1", "gate-detached-run2", "gate-detached-run3",
            "detached-build", "te-broker-stuck-run1", "te-broker-stuck-run2",
            "detached-reset-stuck"} <= names


@pytest.mark.parametrize("history", recorded(), ids=lambda p: p.stem)
async def test_recorded_history_replays(history: Path) -> None:
    from temporalio.client import WorkflowHistory

    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter,
                        workflow_runner=workflow_runner())
    # Workflows that name their children after themselves replay under their own ID.
    workflow_id = recorded_ids().get(history.stem, history.stem)
    result = await replayer.replay_workflow(
        WorkflowHistory.from_json(workflow_id, history.read_text()),
        raise_on_replay_failure=False,
    )
    assert result.replay_failure is None, f"{history.name}: {result.replay_failure}"


@pytest.mark.skipif(not os.environ.get("LOCKMASTER_RECORD_HISTORIES"),
                    reason="records histories only when asked")
async def test_record_histories(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = make_config(
        tmp_path,
        projects=[{"name": name, "connection": "local", "pipelines": {"check": {"jobs": [
            "build", {"name": "unit", "dependencies": ["build"]}, "flaky", "long"]}}}],
        jobs=[
            {"name": "build", "run": "test ! -f BREAK", "nodeset": "local"},
            {"name": "unit", "run": "true", "nodeset": "local"},
            {"name": "flaky", "run": "true", "pre-run": ["test ! -f BREAK"], "attempts": 2,
             "nodeset": "local"},
            {"name": "long", "run": "test -f BREAK || test ! -f SLOW || sleep 60",
             "nodeset": "local"},
        ],
    )
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "one\n"})

        async def save(wid: str, stem: str) -> None:
            history = await client.get_workflow_handle(wid).fetch_history()
            (HISTORIES / f"{stem}.json").write_text(history.to_json())

        _, actions = await dep.upload(name, files={"a": "a\n"}, subject="ok")
        await dep.outcome(actions[0].workflow_id or "")
        await save(actions[0].workflow_id or "", "check-success")

        _, actions = await dep.upload(name, files={"BREAK": "x\n"}, subject="broken")
        await dep.outcome(actions[0].workflow_id or "")
        await save(actions[0].workflow_id or "", "check-failure-skip-retry")

        info, actions = await dep.upload(name, files={"SLOW": "x\n"}, subject="slow")
        await _wait_running(dep, actions[0].workflow_id or "", "long")
        new = await asyncio.to_thread(dep.store.new_patchset, info.number, {"SLOW": "x\n"})
        await dep.router.route(dep.event(new))
        with pytest.raises(Exception):  # noqa: B017 - the cancelled run's result is an error
            await dep.outcome(actions[0].workflow_id or "")
        await save(actions[0].workflow_id or "", "check-cancelled")
        await dep.outcome(f"check/{name}/{info.number}/2", timeout=120)

        first = await asyncio.to_thread(dep.store.upload, name, files={"README": "two\n"},
                                        subject="two")
        second = await asyncio.to_thread(dep.store.upload, name, files={"README": "three\n"},
                                         subject="three")
        await asyncio.to_thread(dep.store.submit, first.ref())
        actions = await dep.router.route(dep.event(second))
        await dep.outcome(actions[0].workflow_id or "")
        await save(actions[0].workflow_id or "", "check-merge-conflict")


@pytest.mark.skipif(not os.environ.get("LOCKMASTER_RECORD_HISTORIES"),
                    reason="records histories only when asked")
async def test_record_gate_history(client: Client, tmp_path: Path) -> None:
    from tests.test_gate_workflow import gate_config, gate_three_with_broken_middle

    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 0.3; test ! -f BROKEN")
    async with deployment(client, config) as dep:
        await gate_three_with_broken_middle(dep, name)
        history = await client.get_workflow_handle(f"gate/{name}").fetch_history()
        (HISTORIES / "gate-queue.json").write_text(history.to_json())


async def save_runs(client: Client, wid: str, stem: str) -> int:
    """Every run of `wid` (oldest first) as `<stem>-run<N>.json`: a history that crosses a
    continue-as-new, and the run it continued into."""
    runs = [w async for w in client.list_workflows(f'WorkflowId = "{wid}"')]
    runs.sort(key=lambda w: w.start_time)
    for n, run in enumerate(runs, 1):
        history = await client.get_workflow_handle(wid, run_id=run.run_id).fetch_history()
        (HISTORIES / f"{stem}-run{n}.json").write_text(history.to_json())
    return len(runs)


@pytest.mark.skipif(not os.environ.get("LOCKMASTER_RECORD_HISTORIES"),
                    reason="records histories only when asked")
async def test_record_gate_stack_history(client: Client, tmp_path: Path) -> None:
    """A stack of three in the gate, its bottom change superseded (the two above leave with a
    report), the queue continuing as new on the way."""
    from tests.test_gate_workflow import gate_config, gate_stack_then_new_bottom_patchset

    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 1")
    async with deployment(client, config) as dep:
        await gate_stack_then_new_bottom_patchset(dep, name, max_history_events=60)
        assert await save_runs(client, f"gate/{name}", "gate-stack-superseded") >= 2


@pytest.mark.skipif(not os.environ.get("LOCKMASTER_RECORD_HISTORIES"),
                    reason="records histories only when asked")
async def test_record_check_restart_history(client: Client) -> None:
    """A check run whose Depends-On dependency gets a new patchset: it continues as new on it
    (and there finds the dependency unapproved: not run)."""
    from lockmaster.simulate.loading import load_scenario
    from lockmaster.simulate.runner import run_simulation

    scenario = load_scenario(Path(__file__).parent
                             / "scenarios/zuul/scheduler-no-dequeue-on-new-patchset-deps.yaml")
    await run_simulation(scenario, client=client)
    [check] = [wf async for wf in client.list_workflows(
        'WorkflowType = "CheckWorkflow" AND ExecutionStatus = "Completed"')
        if wf.id.endswith("/2/1")]
    assert await save_runs(client, check.id, "check-dependency-restart") >= 2


@pytest.mark.skipif(not os.environ.get("LOCKMASTER_RECORD_HISTORIES"),
                    reason="records histories only when asked")
async def test_record_gate_batches_history(client: Client) -> None:
    """A gate queue with premerges at enqueue and a batch of submits stopped by a refusal."""
    from datetime import UTC, datetime, timedelta

    from lockmaster.simulate.loading import load_scenario
    from lockmaster.simulate.runner import run_simulation

    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    scenario = load_scenario(Path(__file__).parent / "scenarios/gate-batch-submit-refused.yaml")
    await run_simulation(scenario, client=client)
    [gate] = [wf async for wf in client.list_workflows(
        f'WorkflowType = "GateQueueWorkflow" AND StartTime > "{since}"')]
    history = await client.get_workflow_handle(gate.id, run_id=gate.run_id).fetch_history()
    (HISTORIES / "gate-queue-batches.json").write_text(history.to_json())


@pytest.mark.skipif(not os.environ.get("LOCKMASTER_RECORD_HISTORIES"),
                    reason="records histories only when asked")
async def test_record_nodepool_history(
    client: Client, cloud_config: Any, fake_openstack: Any, sshd_server: Any, tmp_path: Path
) -> None:
    """A cloud pool's life: min-ready launch, a request served from it, the node deleted after
    use, a failed launch retried, leak scans, then continue-as-new is not reached."""
    from lockmaster.nodes.pooled import PooledNodes
    from tests.test_nodepool_cloud import pool_config, running, until

    config = pool_config(tmp_path, cloud_config, sshd_server, min_ready=1)
    async with running(client, config) as ops:
        source = PooledNodes(client, config, config.state_path)
        nodeset = await source.acquire_nodeset(["small"], "b1")
        await source.release_nodeset(nodeset)
        fake_openstack.fail_next_servers(1)
        nodeset = await source.acquire_nodeset(["small"], "b2")
        await source.release_nodeset(nodeset)
        await until(lambda: len(fake_openstack.live_servers()) == 1, what="back to min-ready")
        await asyncio.sleep(1.5)  # a few leak scans
        [pool] = await ops.status()
        assert pool.launches >= 3
        handle = ops.handle(ops.specs[0])
        history = await handle.fetch_history()
        (HISTORIES / "nodepool-cloud.json").write_text(history.to_json())


@pytest.mark.skipif(not os.environ.get("LOCKMASTER_RECORD_HISTORIES"),
                    reason="records histories only when asked")
async def test_record_te_broker_history(client: Client, tmp_path: Path) -> None:
    """A TE broker's life: first resets, a lease renewed and released, a waiter served, a failed
    reset quarantining a TE, an operator's unquarantine."""
    from tests.test_te_broker_workflow import RecordingHost, broker, holder, te_config

    config = te_config(tmp_path, per_host=1)
    host = RecordingHost()
    async with broker(client, config, host) as ops:
        a = holder(client, config, "a")
        lease = await a.acquire(timeout=10)
        await a.renew()
        b = holder(client, config, "b")
        waiting = asyncio.create_task(b.acquire(timeout=30))
        await a.release()
        await waiting
        assert lease.te is not None
        host.fail_reset.add(lease.te.key)
        await b.release()
        for _ in range(100):
            [status] = await ops.status()
            if status.tes[0].state.value == "quarantined":
                break
            await asyncio.sleep(0.1)
        host.fail_reset.clear()
        assert (await ops.unquarantine(lease.te.key)).ok
        await asyncio.sleep(0.5)
        history = await client.get_workflow_handle(
            f"{config.temporal.workflow_id_prefix}te/default").fetch_history()
        (HISTORIES / "te-broker.json").write_text(history.to_json())


@pytest.mark.skipif(not os.environ.get("LOCKMASTER_RECORD_HISTORIES"),
                    reason="records histories only when asked")
async def test_record_publish_histories(client: Client, tmp_path: Path) -> None:
    """Two merges published in order (the first built last), a mirror down twice: the queue's
    history and the second change's."""
    from lockmaster.model.publish import PublishResult
    from lockmaster.starters.publish import queue_workflow_id, start_publish
    from tests.test_publish_workflow import StandIns, merged, publish_config, publishing

    project = f"t{uuid.uuid4().hex[:6]}/hello"
    config = publish_config(tmp_path, project)
    stand_ins = StandIns()
    stand_ins.build_delay[1] = 1.0
    stand_ins.mirror_down["far"] = 2
    async with publishing(client, config, stand_ins):
        actions = [await start_publish(client, config, merged(project, n)) for n in (1, 2)]
        for action in actions:
            handle = client.get_workflow_handle(action.workflow_id or "",
                                                result_type=PublishResult)
            assert (await handle.result()).ok
        second = await client.get_workflow_handle(actions[1].workflow_id or "").fetch_history()
        (HISTORIES / "publish-change.json").write_text(second.to_json())
        queue = await client.get_workflow_handle(queue_workflow_id(config)).fetch_history()
        (HISTORIES / "publish-queue.json").write_text(queue.to_json())


@pytest.mark.skipif(not os.environ.get("LOCKMASTER_RECORD_HISTORIES"),
                    reason="records histories only when asked")
async def test_record_promotion_histories(client: Client, tmp_path: Path) -> None:
    """A change gated, merged and its gate build promoted: the gate queue's history (it
    recorded what it tested before submitting) and the publication's (the look-up, no
    rebuild)."""
    from lockmaster.model.publish import BuildSource
    from lockmaster.starters.publish import change_workflow_id
    from tests.test_gate_workflow import approve
    from tests.test_publish_promotion import gated, publication

    async with gated(client, tmp_path) as (dep, _, project):
        info, _ = await dep.upload(project, files={"feature": "new\n"}, subject="A feature")
        await approve(dep, info.number)
        shown = await publication(dep, project, info.number)
        assert shown.provenance is not None and shown.provenance.source is BuildSource.GATE
        wid = change_workflow_id(dep.config, project, info.number)
        history = await client.get_workflow_handle(wid).fetch_history()
        (HISTORIES / "publish-promoted.json").write_text(history.to_json())
        gate = f"{dep.config.temporal.workflow_id_prefix}gate/{project}"
        history = await client.get_workflow_handle(gate).fetch_history()
        (HISTORIES / "gate-promoted.json").write_text(history.to_json())


@pytest.mark.skipif(not os.environ.get("LOCKMASTER_RECORD_HISTORIES"),
                    reason="records histories only when asked")
async def test_record_long_lived_histories(client: Client, tmp_path: Path) -> None:
    """A TE broker whose second host is down throughout, across continue-as-new (its first
    two runs and the stuck reset's detached child). (gate-detached-run1..3 and detached-build,
    a gate queue whose builds ran in detached children, were recorded with this recorder at
    commit 30b347b; gates have not started such children since: see the outliving recorder.)"""
    from tests.test_long_horizon import (
        runs_of,
        test_broker_expires_leases_on_time_while_a_host_is_down,
    )

    since = datetime.now(UTC).isoformat()
    await test_broker_expires_leases_on_time_while_a_host_is_down(client, tmp_path / "te")
    [broker_id] = {w.id async for w in client.list_workflows(
        f'WorkflowType = "TEBrokerWorkflow" AND StartTime > "{since}"')}
    runs = await runs_of(client, broker_id)
    for index, handle in enumerate(runs[:2], start=1):
        save(f"te-broker-stuck-run{index}", await handle.fetch_history(), broker_id)
    [reset] = [w async for w in client.list_workflows(
        f'WorkflowType = "DetachedWorkWorkflow" AND WorkflowId STARTS_WITH "{broker_id}/reset/'
        f'tehost1/"')]
    history = await client.get_workflow_handle(reset.id, run_id=reset.run_id).fetch_history()
    save("detached-reset-stuck", history, reset.id)


async def gate_across_boundaries(client: Client, tmp_path: Path, command: str
                                 ) -> tuple[str, list[Any]]:
    """Four approved changes through a gate queue that continues as new every 30 events, its
    jobs running `command`: the queue's workflow ID and its runs, oldest first (three or more).
    """
    from lockmaster.starters.operator import enqueue_change
    from tests.test_gate_workflow import gate_config, settle
    from tests.test_long_horizon import runs_of

    name = unique_project()
    config = gate_config(tmp_path, [name], command)
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        for i in range(4):
            change = dep.store.upload(name, files={f"f{i}": "x\n"}, subject=f"c{i}")
            dep.store.vote(change.number, {"Code-Review": 2, "Workflow": 1}, author="core")
            await enqueue_change(client, config, "gate", change.ref(), max_history_events=30)
        wid = f"gate/{name}"
        await settle(dep, wid, timeout=120)
    runs = await runs_of(client, wid)
    assert len(runs) >= 3
    return wid, runs


async def save_gate_runs(client: Client, tmp_path: Path, stem: str,
                         counted: Callable[[Any], bool]) -> int:
    """Record the first three runs of a gate queue across boundaries (`stem`-run1..3) and
    count their events that `counted` picks."""
    wid, runs = await gate_across_boundaries(client, tmp_path, "sleep 2")
    found = 0
    for index, handle in enumerate(runs[:3], start=1):
        history = await handle.fetch_history()
        found += sum(1 for e in history.events if counted(e))
        save(f"{stem}-run{index}", history, wid)
    return found


@pytest.mark.skipif(not os.environ.get("LOCKMASTER_RECORD_HISTORIES"),
                    reason="records histories only when asked")
async def test_record_outliving_build_histories(client: Client, tmp_path: Path) -> None:
    """Builds as activities that outlive the queue's run (temporal/outliving.py): the first
    three runs of a gate queue continuing as new while builds run, their results reaching the
    next run by signal, and each run asking which builds started in a workflow task before
    the one that continues as new (recorded as gate-outliving3; gate-outliving2 asked in that
    task itself, gate-outliving was recorded before the question)."""
    signalled = await save_gate_runs(
        client, tmp_path, "gate-outliving3",
        lambda e: e.HasField("workflow_execution_signaled_event_attributes")
        and e.workflow_execution_signaled_event_attributes.signal_name == "work-done")
    assert signalled, "no build result crossed a continue-as-new in the recorded runs"


@pytest.mark.skipif(not os.environ.get("LOCKMASTER_RECORD_HISTORIES"),
                    reason="records histories only when asked")
async def test_record_whole_activation_histories(client: Client, tmp_path: Path) -> None:
    """The same as gate-outliving3, recorded with the orchestrator's workflows seeing each
    workflow task's jobs as one batch (workers/common.whole_activations: the SDK's flag 2, in
    the history) and merge, build and enqueue payloads interned (model/interned.py): recorded
    as gate-whole-run1..3."""
    flagged = await save_gate_runs(
        client, tmp_path, "gate-whole",
        lambda e: e.HasField("workflow_task_completed_event_attributes")
        and 2 in e.workflow_task_completed_event_attributes.sdk_metadata.lang_used_flags)
    assert flagged, "no workflow task recorded the single-batch flag"
