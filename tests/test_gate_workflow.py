"""The gate end to end on the dev server: shared queue, speculative builds, failure handling,
operator commands, continue-as-new. Real git, local nodes running real commands."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

from temporalio.client import Client

from lockmaster.model.gate import QueueStatus, StatusQuery
from tests.deployment import Deployment, deployment, make_config, unique_project

CHECK = {
    "name": "check", "trigger": [{"event": "patchset-created"}],
    "success": {"labels": {"Verified": 1}}, "failure": {"labels": {"Verified": -1}},
}
GATE = {
    "name": "gate", "manager": "dependent",
    "trigger": [{"event": "comment-added", "approval": {"Workflow": 1}}],
    "require": {"Code-Review": 2, "Workflow": 1},
    "start": {"labels": {"Verified": 0}},
    "success": {"labels": {"Verified": 2}, "submit": True},
    "failure": {"labels": {"Verified": -2}},
    "supersedes": ["check"],
}


def gate_config(tmp_path: Path, projects: list[str], run: str, queue: str | None = None,
                **pipeline: Any):
    return make_config(
        tmp_path,
        pipelines=[CHECK, {**GATE, **pipeline}],
        projects=[{"name": p, "connection": "local", "queue": queue,
                   "pipelines": {"gate": {"jobs": ["merge-check", {
                       "name": "test", "dependencies": ["merge-check"]}]}}} for p in projects],
        jobs=[{"name": "merge-check", "run": "true", "nodeset": "local"},
              {"name": "test", "run": run, "nodeset": "local"}],
    )


async def approve(dep: Deployment, number: int) -> None:
    info = await asyncio.to_thread(dep.store.vote, number, {"Code-Review": 2, "Workflow": 1},
                                   author="core")
    await dep.router.route(dep.event(
        info, "comment-added", comment=f"Patch Set {info.patchset}: Code-Review+2 Workflow+1",
        author="core", approvals={"Code-Review": 2, "Workflow": 1}))


async def settle(dep: Deployment, wid: str, timeout: float = 90) -> QueueStatus:
    handle = dep.client.get_workflow_handle(wid)
    for _ in range(int(timeout * 10)):
        status = await handle.query("status", StatusQuery(), result_type=QueueStatus)
        if status.idle:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"queue never settled: {status}")


def branch_files(dep: Deployment, project: str) -> list[str]:
    out = subprocess.run(["git", "ls-tree", "--name-only", "master"], cwd=dep.store.repo(project),
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def merged_order(dep: Deployment, numbers: list[int]) -> list[int]:
    merged = [(dep.store.record(n)["status"], n) for n in numbers]
    return [n for status, n in merged if status == "MERGED"]


async def test_broken_change_is_skipped_and_the_rest_merge_in_order(
    client: Client, tmp_path: Path
) -> None:
    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 0.5; test ! -f BROKEN")
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        a = dep.store.upload(name, files={"a": "a\n"}, subject="A")
        b = dep.store.upload(name, files={"BROKEN": "b\n"}, subject="B")
        c = dep.store.upload(name, files={"c": "c\n"}, subject="C")
        for change in (a, b, c):
            await approve(dep, change.number)
        await settle(dep, f"gate/{name}")
        assert merged_order(dep, [a.number, b.number, c.number]) == [a.number, c.number]
        reports = {n: [(m["labels"], m["message"].splitlines()[0]) for m in dep.reports(n)]
                   for n in (a.number, b.number, c.number)}
        assert reports[a.number] == [({"Verified": 0}, "Starting gate jobs."),
                                     ({"Verified": 2}, "Build succeeded (gate).")]
        assert reports[b.number][-1] == ({"Verified": -2}, "Build failed (gate).")
        assert reports[c.number][-1] == ({"Verified": 2}, "Build succeeded (gate).")
        # The branch now holds A and C and not B: they merged exactly as tested.
        files = branch_files(dep, name)
        assert "a" in files and "c" in files and "BROKEN" not in files
