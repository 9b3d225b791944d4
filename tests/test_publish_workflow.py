"""Publication after merge on the real dev server: `publish/<project>/<change>` workflows and the
publish queue, with the executor's and the publishing host's activities stood in for at the
activity boundary (so builds can be slow or fail and mirrors can be down at will; the real
publishing is tested in tests/test_publishing*.py and end to end in tests/test_packages_e2e.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker
from typer.testing import CliRunner
from typer.testing import Result as CliResult

from lockmaster.cli.main import app
from lockmaster.config.models import LockmasterConfig
from lockmaster.model.build import Artifact, BuildRequest, BuildResult, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.publish import (
    PublishResult,
    PublishStableRequest,
    PublishStableResult,
    QueueState,
    StepState,
    SyncMirrorRequest,
    SyncMirrorResult,
)
from lockmaster.review.registry import review_drivers
from lockmaster.starters.publish import (
    Publications,
    PublishError,
    change_workflow_id,
    start_publish,
)
from lockmaster.temporal.task_queues import Role, task_queue
from lockmaster.workers.orchestrator import orchestrator_worker
from tests.deployment import make_config


class StandIns:
    """The executor's build and the publishing host's steps, recording what they were asked."""

    def __init__(self) -> None:
        self.build_delay: dict[int, float] = {}
        self.failing_builds: set[int] = set()
        self.published: list[tuple[int, str]] = []  # (change, snapshot) in the order done
        self.mirror_down: Counter[str] = Counter()  # failures left per mirror
        self.synced: list[tuple[str, str]] = []
        self.mirror_at: dict[str, str] = {}

    @activity.defn(name="run_build")
    async def run_build(self, request: BuildRequest) -> BuildResult:
        await asyncio.sleep(self.build_delay.get(request.change.number, 0.0))
        number = request.change.number
        result = Result.FAILURE if number in self.failing_builds else Result.SUCCESS
        return BuildResult(
            build_id=request.build_id, job=request.job.name, result=result,
            log_url=f"http://logs.test/{number}/", artifacts=[Artifact(
                name="packages", url=f"http://logs.test/{number}/artifacts/packages/",
                job=request.job.name, project=request.change.project, change=number,
                patchset=request.change.patchset)])

    @activity.defn(name="publish_stable")
    async def publish_stable(self, request: PublishStableRequest) -> PublishStableResult:
        assert request.packages_url.endswith(f"/{request.change.number}/artifacts/packages/")
        self.published.append((request.change.number, request.snapshot))
        return PublishStableResult(snapshot=request.snapshot, formats=["deb"],
                                   added=[f"hello_{request.change.number}_all.deb"])

    @activity.defn(name="sync_mirror")
    async def sync_mirror(self, request: SyncMirrorRequest) -> SyncMirrorResult:
        if self.mirror_down[request.mirror] > 0:
            self.mirror_down[request.mirror] -= 1
            raise RuntimeError(f"mirror {request.mirror} is down")
        current = self.mirror_at.get(request.mirror, "")
        if current >= request.snapshot:
            return SyncMirrorResult(mirror=request.mirror, snapshot=current, skipped=True)
        self.mirror_at[request.mirror] = request.snapshot
        self.synced.append((request.mirror, request.snapshot))
        return SyncMirrorResult(mirror=request.mirror, snapshot=request.snapshot,
                                added=["x.deb"], report_url=f"http://mirror/{request.snapshot}")


def publish_config(tmp_path: Path, project: str) -> LockmasterConfig:
    config = make_config(
        tmp_path, projects=[],
        jobs=[{"name": "package-build", "package": {"step": "build"}, "nodeset": "local"}])
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["projects"] = [{"name": project, "connection": "local",
                         "publish": {"build-job": "package-build"}}]
    prefix = f"p-{uuid.uuid4().hex[:8]}/"
    data["temporal"]["workflow-id-prefix"] = prefix
    data["publishing"] = {
        "signing": {"gnupg-home": str(tmp_path / "gnupg"), "key-id": "ABCD"},
        "mirrors": [{"name": "near", "driver": "directory", "path": str(tmp_path / "near")},
                    {"name": "far", "driver": "directory", "path": str(tmp_path / "far")}]}
    return LockmasterConfig.model_validate(data)


@contextlib.asynccontextmanager
async def publishing(client: Client, config: LockmasterConfig, stand_ins: StandIns
                     ) -> AsyncIterator[Publications]:
    prefix = config.temporal.task_queue_prefix
    async with orchestrator_worker(client, config, review_drivers(config)), \
            Worker(client, task_queue=task_queue(prefix, Role.EXECUTOR),
                   activities=[stand_ins.run_build]), \
            Worker(client, task_queue=task_queue(prefix, Role.PUBLISHER),
                   activities=[stand_ins.publish_stable, stand_ins.sync_mirror]):
        yield Publications(client, config)


def merged(project: str, number: int) -> ChangeRef:
    return ChangeRef(connection="local", project=project, branch="master", number=number,
                     patchset=1, commit=f"{number:040x}")


async def result(client: Client, wid: str) -> PublishResult:
    return await asyncio.wait_for(
        client.get_workflow_handle(wid, result_type=PublishResult).result(), 60)


async def test_merges_publish_in_merge_order_and_reach_every_mirror(
        client: Client, tmp_path: Path) -> None:
    project = f"t{uuid.uuid4().hex[:6]}/hello"
    config = publish_config(tmp_path, project)
    stand_ins = StandIns()
    stand_ins.build_delay[1] = 1.0  # merged first, built last
    async with publishing(client, config, stand_ins) as ops:
        first = await start_publish(client, config, merged(project, 1))
        second = await start_publish(client, config, merged(project, 2))
        again = await start_publish(client, config, merged(project, 1))  # announced twice
        assert again.action == "already-running" and again.workflow_id == first.workflow_id
        done = [await result(client, a.workflow_id or "") for a in (first, second)]
        assert [r.ok for r in done] == [True, True], done
        late = await start_publish(client, config, merged(project, 2))  # announced again later
        assert late.action == "duplicate" and late.workflow_id == second.workflow_id
        assert stand_ins.published == [(1, "000001-" + project.replace("/", "-") + "-1"),
                                       (2, "000002-" + project.replace("/", "-") + "-2")]
        queue = await ops.queue()
        assert [e.state for e in queue.entries] == [QueueState.DONE, QueueState.DONE]
        shown = await ops.show(project, 2)
        assert [(s.name, s.state) for s in shown.steps] == [
            ("build", StepState.DONE), ("publish", StepState.DONE),
            ("sync:near", StepState.DONE), ("sync:far", StepState.DONE)]
        assert shown.steps[1].added == ["hello_2_all.deb"]
        assert shown.steps[2].added == ["x.deb"]  # what the mirror's sync reported
        # Each mirror ends on the newest snapshot; an older one never follows a newer one.
        for mirror in ("near", "far"):
            snapshots = [s for m, s in stand_ins.synced if m == mirror]
            assert snapshots == sorted(snapshots) and snapshots[-1] == shown.snapshot


async def test_failed_build_is_passed_over_and_a_down_mirror_is_retried(
        client: Client, tmp_path: Path) -> None:
    project = f"t{uuid.uuid4().hex[:6]}/hello"
    config = publish_config(tmp_path, project)
    stand_ins = StandIns()
    stand_ins.failing_builds.add(1)
    stand_ins.mirror_down["far"] = 2  # refuses twice, then is back
    async with publishing(client, config, stand_ins) as ops:
        broken = await start_publish(client, config, merged(project, 1))
        good = await start_publish(client, config, merged(project, 2))
        failed = await result(client, broken.workflow_id or "")
        assert not failed.ok and "FAILURE" in failed.message
        assert [(s.name, s.state) for s in failed.steps][:2] == [
            ("build", StepState.FAILED), ("publish", StepState.SKIPPED)]
        published = await result(client, good.workflow_id or "")
        assert published.ok, published
        assert [n for n, _ in stand_ins.published] == [2]
        shown = await ops.show(project, 2)
        far = next(s for s in shown.steps if s.name == "sync:far")
        assert far.state is StepState.DONE
        assert [m for m, _ in stand_ins.synced].count("far") == 1  # no duplicate sync
        # Retriggering one step: the far mirror again (it is current: nothing to send).
        answer = await ops.retrigger(project, 2, "sync:far")
        assert answer.ok
        rerun = await result(client, answer.workflow_id or "")
        assert rerun.ok and [s.name for s in rerun.steps] == ["sync:far"]
        assert "already at" in (rerun.steps[0].detail or "")
        # `publish show` keeps the earlier run's rows, marked, beside the step run again.
        again = await ops.show(project, 2)
        assert [s.name for s in again.steps] == [s.name for s in shown.steps]
        assert [s.name for s in again.steps if not s.earlier] == ["sync:far"]
        assert next(s for s in again.steps if s.name == "build").state is StepState.DONE
        # ... and publishing again: a new snapshot, behind everything merged so far.
        answer = await ops.retrigger(project, 2, "publish")
        rerun = await result(client, answer.workflow_id or "")
        assert rerun.ok and rerun.snapshot is not None and rerun.snapshot.startswith("000003-")
        # The same with the temporal CLI: the command `--dry-run` prints, run as printed.
        printed = await ops.retrigger(project, 2, "sync:near", dry_run=True)
        assert printed.message.startswith("temporal workflow start --type PublishWorkflow")
        from lockmaster.temporal.devserver import temporal_binary

        address = client.service_client.config.target_host
        command = printed.message.replace("temporal ", f"{temporal_binary()} ", 1)
        ran = await asyncio.to_thread(subprocess.run, f"{command} --address {address}",
                                      shell=True, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        rerun = await result(client, printed.workflow_id or "")
        assert rerun.ok and [s.name for s in rerun.steps] == ["sync:near"]
        # The failed build, fixed, retriggered as a whole: built, published, synced.
        stand_ins.failing_builds.clear()
        answer = await ops.retrigger(project, 1, "build")
        rebuilt = await result(client, answer.workflow_id or "")
        assert rebuilt.ok and [s.name for s in rebuilt.steps] == [
            "build", "publish", "sync:near", "sync:far"]
        assert stand_ins.published[-1][0] == 1
        with pytest.raises(PublishError, match="no step 'sync:nowhere'"):
            await ops.retrigger(project, 2, "sync:nowhere")
        with pytest.raises(PublishError, match="has not been published"):
            await ops.show(project, 99)


async def test_publish_queue_continues_as_new_with_changes_waiting(
        client: Client, tmp_path: Path) -> None:
    from lockmaster.model.publish import QueueInput
    from lockmaster.starters.publish import queue_workflow_id
    from lockmaster.workflows.publish_queue import PublishQueueWorkflow

    project = f"t{uuid.uuid4().hex[:6]}/hello"
    config = publish_config(tmp_path, project)
    stand_ins = StandIns()
    stand_ins.build_delay[1] = 2.0
    async with publishing(client, config, stand_ins):
        # The queue starts with a low history limit; while change 1 builds, 2..6 pile up.
        await client.start_workflow(
            PublishQueueWorkflow.run, QueueInput(max_history_events=20),
            id=queue_workflow_id(config),
            task_queue=task_queue(config.temporal.task_queue_prefix, Role.ORCHESTRATOR))
        actions = [await start_publish(client, config, merged(project, n)) for n in range(1, 7)]
        results = [await result(client, a.workflow_id or "") for a in actions]
        assert all(r.ok for r in results), results
        assert [n for n, _ in stand_ins.published] == [1, 2, 3, 4, 5, 6]
        handle = client.get_workflow_handle(queue_workflow_id(config))
        runs = {e.run_id async for e in client.list_workflows(
            f'WorkflowId = "{handle.id}"')}
        assert len(runs) >= 2, "the queue never continued as new"


async def test_publish_commands(client: Client, tmp_path: Path) -> None:
    """`lockmaster publish show|queue|retrigger|skip` as an operator types them."""
    project = f"t{uuid.uuid4().hex[:6]}/hello"
    config = publish_config(tmp_path, project)
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["temporal"]["address"] = client.service_client.config.target_host
    config_file = tmp_path / "lockmaster.yaml"
    config_file.write_text(yaml.safe_dump(data))
    runner = CliRunner()

    def cli(*args: str) -> CliResult:
        return runner.invoke(app, ["publish", *args, "--config", str(config_file)])

    stand_ins = StandIns()
    async with publishing(client, config, stand_ins):
        action = await start_publish(client, config, merged(project, 5))
        assert (await result(client, action.workflow_id or "")).ok
        shown = await asyncio.to_thread(cli, "show", project, "5")
        assert shown.exit_code == 0, shown.output
        assert "sync:near" in shown.output and "publish + hello_5_all.deb" in shown.output
        as_json = json.loads((await asyncio.to_thread(cli, "show", project, "5", "--json")).output)
        assert as_json["snapshot"].startswith("000001-") and as_json["done"] is True
        queue = await asyncio.to_thread(cli, "queue", "--json")
        assert [e["state"] for e in json.loads(queue.output)["entries"]] == ["done"]
        again = await asyncio.to_thread(cli, "retrigger", project, "5", "--step", "sync:far",
                                        "--user", "alice", "--reason", "mirror was rebuilt")
        assert again.exit_code == 0 and "runs again (retriggered by alice: mirror was " \
            "rebuilt)" in " ".join(again.output.split())
        described = await client.get_workflow_handle(change_workflow_id(config, project, 5)
                                                     ).describe()
        assert (await described.memo_value("by"), await described.memo_value("reason")) == (
            "alice", "mirror was rebuilt")
        assert "retriggered by alice" in (await described.static_summary() or "")
        bad = await asyncio.to_thread(cli, "retrigger", project, "5", "--step", "sync:x")
        assert bad.exit_code == 2 and "no step 'sync:x'" in bad.output
        unknown = await asyncio.to_thread(cli, "show", "no/such", "5")
        assert unknown.exit_code == 2 and "not configured" in unknown.output
        never = await asyncio.to_thread(cli, "show", project, "77")
        assert never.exit_code == 2 and "has not been published" in never.output
        skipped = await asyncio.to_thread(cli, "skip", project, "5")
        assert skipped.exit_code == 2 and "not waiting" in skipped.output


async def test_queue_passes_over_gone_workflows_and_operators_skip_stuck_ones(
        client: Client, tmp_path: Path) -> None:
    from lockmaster.model.publish import Enqueue, QueueInput, QueueStatus, QueueStatusQuery, Ready
    from lockmaster.model.publish import SkipRequest as Skip
    from lockmaster.model.testenv import OperatorAnswer
    from lockmaster.starters.publish import queue_workflow_id
    from lockmaster.workflows.publish_queue import PublishQueueWorkflow

    project = f"t{uuid.uuid4().hex[:6]}/hello"
    config = publish_config(tmp_path, project)
    async with publishing(client, config, StandIns()):
        handle = await client.start_workflow(
            PublishQueueWorkflow.run, QueueInput(), id=queue_workflow_id(config),
            task_queue=task_queue(config.temporal.task_queue_prefix, Role.ORCHESTRATOR))
        # "stuck" never reports its build; "gone" is ready but its workflow does not exist.
        await handle.signal("enqueue", Enqueue(workflow_id="publish/stuck", change="stuck 1,1"))
        await handle.signal("enqueue", Enqueue(workflow_id="publish/gone", change="gone 2,1"))
        await handle.signal("ready", Ready(workflow_id="publish/gone"))

        async def states() -> dict[str, str]:
            status = await handle.query("status", QueueStatusQuery(), result_type=QueueStatus)
            return {e.workflow_id: e.state.value for e in status.entries}

        await asyncio.sleep(0.5)
        assert await states() == {"publish/stuck": "building", "publish/gone": "ready"}
        answer = await handle.execute_update(
            "skip", Skip(workflow_id="publish/stuck", by="bob", reason="terminated by hand"),
            result_type=OperatorAnswer)
        assert answer.ok and answer.message == "stuck 1,1 skipped by bob: terminated by hand"
        for _ in range(50):
            if (await states())["publish/gone"] == "failed":
                break
            await asyncio.sleep(0.1)
        assert await states() == {"publish/stuck": "failed", "publish/gone": "failed"}
        status = await handle.query("status", QueueStatusQuery(), result_type=QueueStatus)
        assert next(e.detail for e in status.entries if e.workflow_id == "publish/stuck") == \
            "skipped by bob: terminated by hand"
        again = await handle.execute_update("skip", Skip(workflow_id="publish/stuck"),
                                            result_type=OperatorAnswer)
        assert not again.ok
