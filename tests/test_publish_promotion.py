"""Promoting the gate's build (Zuul's promote): a change gated and merged has the package the gate
built and tested published, without a rebuild, when the merged commit's tree is the tree the
gate tested; otherwise (trees differ, merged by hand, the gate's artifacts gone) it is rebuilt
from the merged commit. The provenance says which build and why.

Real: the dev server, git (the local review system merges; the merger makes the speculative
merge commits and looks up trees), the gate and publish workflows, the `find_gate_build`
activity and the log server serving the artifacts. Stood in at the activity boundary: the
executor's build (it writes the manifest a package build writes, naming the commit it built)
and the publishing host (the real publishing of a gate build is tests/test_publishing_promoted.py
and, end to end, tests/test_packages_e2e.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import yaml
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker
from typer.testing import CliRunner

from lockmaster.activities.promotion import PromotionActivities
from lockmaster.cli.main import app
from lockmaster.config.models import LockmasterConfig
from lockmaster.git.cache import RepoCache
from lockmaster.logserver import LogServer
from lockmaster.model.build import Artifact, BuildRequest, BuildResult, Result
from lockmaster.model.gate import GateTestedAnswer, GateTestedQuery
from lockmaster.model.publish import (
    BuildSource,
    PublishResult,
    PublishStableRequest,
    PublishStableResult,
    PublishStatus,
    StepState,
    SyncMirrorRequest,
    SyncMirrorResult,
)
from lockmaster.starters.publish import Publications, change_workflow_id
from lockmaster.temporal.task_queues import Role, task_queue
from lockmaster.workflows.details import publish_details
from tests.deployment import Deployment, deployment, make_config, unique_project
from tests.ports import free_port
from tests.test_gate_workflow import CHECK, GATE, approve


class StandIns:
    """The executor's build writes a package build's manifest.json (naming the commit it
    checked out: the state's head) into the served log storage; the publishing host records
    what it was asked to publish."""

    def __init__(self, logs_root: Path, logs_url: str) -> None:
        self.logs_root = logs_root
        self.logs_url = logs_url
        self.builds: list[BuildRequest] = []
        self.published: list[PublishStableRequest] = []
        self.during_gate_build: Callable[[], None] | None = None
        self.gate_artifacts_gone = False

    @activity.defn(name="run_build")
    async def run_build(self, request: BuildRequest) -> BuildResult:
        self.builds.append(request)
        if request.pipeline == "gate" and self.during_gate_build is not None:
            await asyncio.to_thread(self.during_gate_build)
        head = request.state.projects[request.change.project].head
        url = f"{self.logs_url}/{request.log_path}/artifacts/packages/"
        if not (request.pipeline == "gate" and self.gate_artifacts_gone):
            packages = self.logs_root / request.log_path / "artifacts" / "packages"
            packages.mkdir(parents=True)
            (packages / "manifest.json").write_text(json.dumps({
                "manifest_version": 1, "source_commit": head, "source_dirty": False,
                "formats": ["deb"], "packages": []}))
        return BuildResult(
            build_id=request.build_id, job=request.job.name, result=Result.SUCCESS,
            log_url=f"{self.logs_url}/{request.log_path}/", artifacts=[Artifact(
                name="packages", url=url, job=request.job.name,
                project=request.change.project, change=request.change.number,
                patchset=request.change.patchset)])

    @activity.defn(name="publish_stable")
    async def publish_stable(self, request: PublishStableRequest) -> PublishStableResult:
        self.published.append(request)
        return PublishStableResult(snapshot=request.snapshot, formats=["deb"],
                                   added=["hello_1_all.deb"], provenance="checked here")

    @activity.defn(name="sync_mirror")
    async def sync_mirror(self, request: SyncMirrorRequest) -> SyncMirrorResult:
        return SyncMirrorResult(mirror=request.mirror, snapshot=request.snapshot)

    def gate_heads(self) -> list[str]:
        return [b.state.projects[b.change.project].head for b in self.builds
                if b.pipeline == "gate"]


def promotion_config(tmp_path: Path, project: str, logs_url: str) -> LockmasterConfig:
    config = make_config(tmp_path, pipelines=[CHECK, GATE], projects=[], jobs=[
        {"name": "package-build", "package": {"step": "build"}, "nodeset": "local"}])
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["logs"] = {"url": logs_url}
    data["temporal"]["workflow-id-prefix"] = f"{data['temporal']['task-queue-prefix']}/"
    data["projects"] = [{"name": project, "connection": "local",
                         "pipelines": {"gate": {"jobs": ["package-build"]}},
                         "publish": {"build-job": "package-build"}}]
    data["publishing"] = {
        "signing": {"gnupg-home": str(tmp_path / "gnupg"), "key-id": "ABCD"},
        "mirrors": [{"name": "near", "driver": "directory", "path": str(tmp_path / "near")}]}
    return LockmasterConfig.model_validate(data)


@contextlib.asynccontextmanager
async def gated(client: Client, tmp_path: Path
                ) -> AsyncIterator[tuple[Deployment, StandIns, str]]:
    """A gate and publisher for one project (the real orchestrator, stood-in executor and
    publishing host), its log storage served over HTTP."""
    project = unique_project("hello")
    port = free_port()
    config = promotion_config(tmp_path, project, f"http://127.0.0.1:{port}")
    server = LogServer(config.logs_root, "127.0.0.1", port).start()
    stand_ins = StandIns(config.logs_root, config.logs.url)
    prefix = config.temporal.task_queue_prefix
    try:
        async with deployment(client, config, executor=False) as dep, \
                Worker(client, task_queue=task_queue(prefix, Role.EXECUTOR),
                       activities=[stand_ins.run_build]), \
                Worker(client, task_queue=task_queue(prefix, Role.PUBLISHER),
                       activities=[stand_ins.publish_stable, stand_ins.sync_mirror]):
            dep.store.create_project(project, {"README": "one\n"})
            yield dep, stand_ins, project
    finally:
        server.stop()


async def publication(dep: Deployment, project: str, number: int) -> PublishStatus:
    wid = change_workflow_id(dep.config, project, number)
    async with asyncio.timeout(60):
        while True:
            try:
                result = await dep.client.get_workflow_handle(
                    wid, result_type=PublishResult).result()
                break
            except RPCError:  # not started yet
                await asyncio.sleep(0.2)
    assert result.ok, result
    return await Publications(dep.client, dep.config).show(project, number)


def git_tree(dep: Deployment, project: str, commit: str) -> str:
    """The commit's tree, from the review system's repository or (a speculative merge) the
    merger's."""
    for repo in (dep.store.repo(project),
                 dep.config.state_path / "git" / "merger" / "local" / f"{project}.git"):
        found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{tree}}"],
                               cwd=repo, capture_output=True, text=True)
        if found.returncode == 0:
            return found.stdout.strip()
    raise AssertionError(f"no commit {commit}")


async def test_the_gate_build_is_promoted_when_the_merged_tree_is_the_tested_one(
        client: Client, tmp_path: Path) -> None:
    async with gated(client, tmp_path) as (dep, stand_ins, project):
        info, _ = await dep.upload(project, files={"feature": "new\n"}, subject="A feature")
        await approve(dep, info.number)
        shown = await publication(dep, project, info.number)
        merged = dep.store.record(info.number)["merged_commit"]
        # Nothing was built for the publication: only the gate's build ran.
        assert [b.pipeline for b in stand_ins.builds] == ["gate"]
        [gate_build] = stand_ins.builds
        [tested] = stand_ins.gate_heads()
        prov = shown.provenance
        assert prov is not None and prov.source is BuildSource.GATE
        assert tested != merged and prov.tested_commit == tested
        assert prov.merged_commit == merged
        tree = git_tree(dep, project, merged)
        assert prov.tested_tree == prov.merged_tree == tree
        assert prov.reason == f"trees equal: {tree}"
        assert prov.build_id == gate_build.build_id and prov.job == "package-build"
        assert prov.buildset is not None and prov.buildset.startswith(
            f"{dep.config.temporal.workflow_id_prefix}gate/{project} item ")
        assert prov.log_url == f"{dep.config.logs.url}/{gate_build.log_path}/"
        manifest = dep.config.logs_root / gate_build.log_path / "artifacts/packages/manifest.json"
        assert prov.manifest_sha256 == hashlib.sha256(manifest.read_bytes()).hexdigest()
        assert prov.publisher_check == "checked here"
        # The publishing host was handed the gate's packages, as the gate's build.
        [request] = stand_ins.published
        assert request.packages_url == prov.packages_url == shown.packages_url
        assert request.provenance is not None and request.provenance.source is BuildSource.GATE
        assert request.change.commit == merged
        build = shown.steps[0]
        assert (build.name, build.state) == ("build", StepState.DONE)
        assert "promoted the gate's package-build build" in (build.detail or "")
        assert f"provenance: the gate's build, package-build {gate_build.build_id}" in \
            publish_details(shown, ok=True)
        # `lockmaster publish show` says which build and why.
        config_file = tmp_path / "lockmaster.yaml"
        data = dep.config.model_dump(by_alias=True, mode="json", exclude_none=True)
        data["temporal"]["address"] = client.service_client.config.target_host
        config_file.write_text(yaml.safe_dump(data))
        out = await asyncio.to_thread(CliRunner().invoke, app, [
            "publish", "show", project, str(info.number), "--config", str(config_file)])
        assert out.exit_code == 0, out.output
        assert "published build: the gate's build (promoted)" in out.output
        assert f"why: trees equal: {tree}" in out.output
        assert f"built from: {tested}" in out.output
        # Retriggering `publish` hands the publisher the same gate build, as such.
        answer = await Publications(dep.client, dep.config).retrigger(
            project, info.number, "publish")
        rerun = await dep.client.get_workflow_handle(
            answer.workflow_id or "", result_type=PublishResult).result()
        assert rerun.ok and len(stand_ins.published) == 2
        again = stand_ins.published[-1]
        assert again.provenance is not None and again.provenance.source is BuildSource.GATE
        assert again.provenance.tested_commit == tested
        assert [b.pipeline for b in stand_ins.builds] == ["gate"]
        # An orchestrator whose repositories never saw the speculative merge (another host)
        # makes it again from the gate's record: the same commit, so the same tree.
        answer = await dep.client.get_workflow_handle(
            f"{dep.config.temporal.workflow_id_prefix}gate/{project}").query(
            "tested", GateTestedQuery(project=project, number=info.number),
            result_type=GateTestedAnswer)
        assert answer.tested is not None and answer.tested.state.head == tested
        elsewhere = PromotionActivities(dep.client, RepoCache(
            tmp_path / "elsewhere", lambda _c, p: dep.drivers["local"].git_url(p)),
            {project: "local"})
        assert await elsewhere._tested_tree(answer.tested) == tree


async def test_a_merge_onto_another_tip_is_rebuilt_and_says_the_trees_differ(
        client: Client, tmp_path: Path) -> None:
    async with gated(client, tmp_path) as (dep, stand_ins, project):
        other = await asyncio.to_thread(dep.store.upload, project, files={"other": "x\n"},
                                        subject="Merged by hand")

        def merge_by_hand() -> None:  # while the gate tests: the branch moves under it
            stand_ins.during_gate_build = None
            dep.store.submit(other.ref())

        stand_ins.during_gate_build = merge_by_hand
        info, _ = await dep.upload(project, files={"feature": "new\n"}, subject="A feature")
        await approve(dep, info.number)
        shown = await publication(dep, project, info.number)
        merged = dep.store.record(info.number)["merged_commit"]
        assert dep.store.record(other.number)["status"] == "MERGED"
        [tested] = stand_ins.gate_heads()
        assert [b.pipeline for b in stand_ins.builds] == ["gate", "publish"]
        rebuild = stand_ins.builds[-1]
        assert rebuild.state.projects[project].head == merged  # built from the merged commit
        prov = shown.provenance
        assert prov is not None and prov.source is BuildSource.REBUILD
        tested_tree, merged_tree = git_tree(dep, project, tested), git_tree(dep, project, merged)
        assert tested_tree != merged_tree
        assert prov.reason.startswith("trees differ: ")
        assert f"{tested} (tree {tested_tree}) vs merged {merged} (tree {merged_tree})" \
            in prov.reason
        assert prov.build_id == rebuild.build_id and prov.tested_commit == merged
        assert prov.merged_tree == prov.tested_tree == merged_tree
        assert prov.buildset == change_workflow_id(dep.config, project, info.number)
        assert prov.manifest_sha256 is None
        [request] = stand_ins.published
        assert request.provenance is not None
        assert request.provenance.source is BuildSource.REBUILD
        assert request.packages_url == prov.packages_url and "/publish/" in request.packages_url
        assert "trees differ" in (shown.steps[0].detail or "")


async def test_a_change_merged_by_hand_or_whose_gate_artifacts_are_gone_is_rebuilt(
        client: Client, tmp_path: Path) -> None:
    async with gated(client, tmp_path) as (dep, stand_ins, project):
        # Merged by hand (announced as Gerrit would): no gate queue ever ran for it.
        first, _ = await dep.upload(project, files={"a": "a\n"}, subject="By hand")
        await dep.drivers["local"].submit(first.ref())
        shown = await publication(dep, project, first.number)
        prov = shown.provenance
        assert prov is not None and prov.source is BuildSource.REBUILD
        assert prov.reason.startswith("no gate build found: ")
        assert "submitted no tested build" in prov.reason
        assert [b.pipeline for b in stand_ins.builds] == ["publish"]
        # Gated, but its build's artifacts are no longer served.
        stand_ins.gate_artifacts_gone = True
        second, _ = await dep.upload(project, files={"b": "b\n"}, subject="Gated")
        await approve(dep, second.number)
        shown = await publication(dep, project, second.number)
        prov = shown.provenance
        assert prov is not None and prov.source is BuildSource.REBUILD
        assert prov.reason.startswith("no gate build found: its artifacts are gone")
        assert "HTTP 404" in prov.reason
        assert [b.pipeline for b in stand_ins.builds] == ["publish", "gate", "publish"]
