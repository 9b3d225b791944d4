"""`lockmaster gate enqueue|dequeue` and `lockmaster status` against a real queue (issue 15):
a change without its approvals is refused and the queue never hears of it; forced with a
reason, it enters, and `status` and every report to the change say who forced it and why; a
dequeue tells the change who took it out and why."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from temporalio.client import Client
from temporalio.service import RPCError
from typer.testing import CliRunner, Result

from lockmaster.cli.main import app
from lockmaster.model.check import CheckStatus, StatusQuery
from tests.deployment import Deployment, deployment, make_config, unique_project
from tests.test_gate_workflow import gate_config, wait_items

FORCED = "enqueued by alice without its approvals: hotfix for the outage"


async def lockmaster(config_file: Path, *args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, [*args, "--config",
                                                             str(config_file)])


def write_config(dep: Deployment, client: Client, path: Path) -> Path:
    data = dep.config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["temporal"]["address"] = client.service_client.config.target_host
    path.write_text(yaml.safe_dump(data))
    return path


async def wait_report(dep: Deployment, number: int, text: str, timeout: float = 30) -> str:
    for _ in range(int(timeout * 10)):
        found = [m["message"] for m in dep.reports(number) if text in m["message"]]
        if found:
            return found[-1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no report saying {text!r}: {dep.reports(number)}")


async def test_a_forced_enqueue_and_a_dequeue_say_who_and_why(
        client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 30")
    # Its own workflow IDs: `status` lists this test's queue, not the session's others.
    config.temporal = config.temporal.model_copy(
        update={"workflow_id_prefix": f"{config.temporal.task_queue_prefix}/"})
    wid = f"{config.temporal.workflow_id_prefix}gate/{name}"
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        change = dep.store.upload(name, files={"a": "a\n"}, subject="a")
        dep.store.vote(change.number, {"Code-Review": 2}, author="core")
        config_file = write_config(dep, client, tmp_path / "lockmaster.yaml")

        refused = await lockmaster(config_file, "gate", "enqueue", "--change",
                                   str(change.number))
        assert refused.exit_code == 2, refused.output
        assert (f"change {change.number} ({name}) does not meet gate's requirements: Workflow "
                "0 (needs +1)") in " ".join(refused.output.split())
        unforced = await lockmaster(config_file, "gate", "enqueue", "--change",
                                    str(change.number), "--force")
        assert unforced.exit_code == 2, unforced.output
        try:
            await client.get_workflow_handle(wid).describe()
        except RPCError:
            pass  # never started: nothing was signalled
        else:
            raise AssertionError("the queue was started by a refused enqueue")

        forced = await lockmaster(config_file, "gate", "enqueue", "--change",
                                  str(change.number), "--force", "--reason",
                                  "hotfix for the outage", "--user", "alice")
        assert forced.exit_code == 0, forced.output
        assert forced.output.strip() == f"enqueued {wid}: {change.number},1 ({FORCED})"
        await wait_items(dep, wid, 1)
        status = await lockmaster(config_file, "status")
        assert status.exit_code == 0, status.output
        lines = [line.strip() for line in status.output.splitlines()]
        at = lines.index(next(line for line in lines if line.startswith(f"{name} "
                                                                         f"{change.number},1")))
        assert lines[at + 1] == FORCED, status.output
        started = await wait_report(dep, change.number, "Starting gate jobs.")
        assert started.endswith("Enqueued by alice without its approvals: hotfix for the "
                                "outage.")

        dequeued = await lockmaster(config_file, "gate", "dequeue", "--project", name,
                                    "--change", str(change.number), "--reason",
                                    "wrong branch", "--user", "bob")
        assert dequeued.exit_code == 0, dequeued.output
        assert f"{change.number},1 (bob: wrong branch)" in dequeued.output
        report = await wait_report(dep, change.number, "Removed from gate")
        assert "Removed from gate by bob: wrong branch." in report
        status = await lockmaster(config_file, "status")
        left = [line.strip() for line in status.output.splitlines()
                if line.strip().startswith("left:")]
        assert any(f"{change.number},1" in line and "bob" in line and "wrong branch" in line
                   for line in left), status.output


async def test_a_check_run_started_and_stopped_by_operators_says_who_and_why(
        client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = make_config(tmp_path, projects=[{"name": name, "connection": "local",
                                              "pipelines": {"check": {"jobs": ["slow"]}}}],
                         jobs=[{"name": "slow", "run": "sleep 30", "nodeset": "local"}])
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        change = dep.store.upload(name, files={"a": "a\n"}, subject="a")
        config_file = write_config(dep, client, tmp_path / "lockmaster.yaml")
        wid = f"check/{name}/{change.number}/1"
        try:  # the upload's own check (no router here): none runs yet
            await client.get_workflow_handle(wid).describe()
        except RPCError:
            pass
        enqueued = await lockmaster(config_file, "gate", "enqueue", "--pipeline", "check",
                                    "--change", str(change.number), "--user", "alice",
                                    "--reason", "the node was broken")
        assert enqueued.exit_code == 0, enqueued.output
        described = await client.get_workflow_handle(wid).describe()
        assert await described.static_summary() == (
            f"check: {name} change {change.number},1 (enqueued by alice: the node was broken)")
        dequeued = await lockmaster(config_file, "gate", "dequeue", "--pipeline", "check",
                                    "--project", name, "--change", str(change.number),
                                    "--user", "bob", "--reason", "wrong base")
        assert dequeued.exit_code == 0, dequeued.output
        # No dequeue reporter in this pipeline: an operator's dequeue is reported anyway.
        report = await wait_report(dep, change.number, "bob")
        assert "Removed from check by bob: wrong base." in report
        outcome = await client.get_workflow_handle(wid).query("status", StatusQuery(),
                                                              result_type=CheckStatus)
        assert outcome.reason == "dequeued by bob: wrong base"
