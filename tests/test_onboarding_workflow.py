"""`onboard/<cloud>/<region>` on the dev server, through the orchestrator worker, against real
Keystone and the fake cloud; and `lockmaster cloud` (list, status, onboard) with its bad inputs."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner, Result

from lockmaster.cli.main import app
from lockmaster.clouds.preflight import PreflightReport
from lockmaster.config.dns import DnsConfig
from lockmaster.config.models import LockmasterConfig
from lockmaster.model.onboarding import OnboardingStatus, PreflightRequest, onboard_id
from lockmaster.review.registry import review_drivers
from lockmaster.starters.onboarding import start_onboarding
from lockmaster.temporal import search_attributes
from lockmaster.temporal.task_queues import Role, task_queue
from lockmaster.workers.common import workflow_runner
from lockmaster.workers.orchestrator import orchestrator_worker
from lockmaster.workflows.onboarding import OnboardingWorkflow
from tests.deployment import make_config
from tests.fixtures.keystone import REGION
from tests.fixtures.onboarding import OnboardingCloud
from tests.fixtures.pdns import PdnsServer, pdns_server  # noqa: F401


@pytest.fixture
def cloud(onboarding_cloud: OnboardingCloud) -> OnboardingCloud:
    onboarding_cloud.reset()
    return onboarding_cloud


def deployment(tmp_path: Path, cloud: OnboardingCloud, **overrides: Any) -> LockmasterConfig:
    config = make_config(tmp_path, projects=[], jobs=[])
    spec = cloud.spec(tmp_path / "secrets", name=f"donor{uuid.uuid4().hex[:6]}", **overrides)
    config.clouds = [spec]
    return config


async def test_onboarding_runs_preflight_and_stops_saying_so(
    client: Client, cloud: OnboardingCloud, tmp_path: Path
) -> None:
    config = deployment(tmp_path, cloud)
    name = config.clouds[0].name
    async with orchestrator_worker(client, config, review_drivers(config)):
        handle = await start_onboarding(client, config, name, REGION, "alice")
        assert handle.id == onboard_id(name, REGION, config.temporal.workflow_id_prefix)
        status = await handle.result()
        queried = await handle.query("status", result_type=OnboardingStatus)
    assert isinstance(status, OnboardingStatus)
    assert queried == status
    states = {p.name: p.state for p in status.phases}
    assert states["preflight"] == "passed", status.preflight
    assert [p.name for p in status.phases][:3] == ["preflight", "projects-users", "human-gates"]
    assert {s for n, s in states.items() if n != "preflight"} == {"not-implemented"}
    assert status.preflight is not None and status.preflight.ok
    assert "later phases are not implemented yet" in status.outcome
    described = await handle.describe()
    assert described.typed_search_attributes.get(search_attributes.PROVIDER) == name
    assert described.typed_search_attributes.get(search_attributes.RESULT) == "PREFLIGHT_PASSED"
    # Nothing secret in the history: passwords were read by the activity from their files.
    recorded = await handle.fetch_history()
    if os.environ.get("LOCKMASTER_RECORD_HISTORIES"):  # replayed by tests/test_replay.py
        (Path(__file__).parent / "histories" / "onboard-preflight.json").write_text(
            recorded.to_json())
    history = b"".join(event.SerializeToString() for event in recorded.events)
    assert cloud.zuul.password.encode() not in history
    assert cloud.ci.password.encode() not in history
    assert b"zuul.password" in history  # the reference is there


async def test_failed_preflight_is_reported_and_stops(
    client: Client, cloud: OnboardingCloud, tmp_path: Path
) -> None:
    cloud.fake.disk_formats = ["raw"]
    config = deployment(tmp_path, cloud)
    async with orchestrator_worker(client, config, review_drivers(config)):
        handle = await start_onboarding(client, config, config.clouds[0].name, REGION, "bob")
        status = await handle.result()
    assert status.phase("preflight").state == "failed"
    assert status.phase("projects-users").state == "not-implemented"
    assert status.preflight is not None
    assert [c.name for c in status.preflight.failed()] == ["image/disk-format"]
    assert "preflight failed" in status.outcome


async def test_cloud_cli(temporal_env: WorkflowEnvironment, client: Client,
                         cloud: OnboardingCloud, tmp_path: Path) -> None:
    config = deployment(tmp_path, cloud)
    name = config.clouds[0].name
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["temporal"]["address"] = temporal_env.client.service_client.config.target_host
    config_file = tmp_path / "lockmaster.yaml"
    config_file.write_text(yaml.safe_dump(data))
    runner = CliRunner()

    def cli(*args: str) -> Result:
        return runner.invoke(app, ["cloud", *args, "--config", str(config_file)])

    listed = await asyncio.to_thread(cli, "list")
    assert listed.exit_code == 0, listed.output
    assert name in listed.output and REGION in listed.output and "not started" in listed.output
    unknown = await asyncio.to_thread(cli, "onboard", "nope")
    assert unknown.exit_code == 2 and f"no cloud 'nope' (configured: {name})" in unknown.output
    bad_region = await asyncio.to_thread(cli, "onboard", name, "--region", "regionone")
    assert bad_region.exit_code == 2
    assert f"cloud {name!r} has no region 'regionone' (configured: RegionOne)" in bad_region.output
    not_started = await asyncio.to_thread(cli, "status", REGION)
    assert not_started.exit_code == 1 and "not started" in not_started.output
    unknown_region = await asyncio.to_thread(cli, "status", "Nowhere")
    assert unknown_region.exit_code == 2
    assert "no configured cloud has region" in unknown_region.output

    # Started with no worker polling: it stays running, a second onboard says so.
    started = await asyncio.to_thread(cli, "onboard", name)
    assert started.exit_code == 0, started.output
    assert onboard_id(name, REGION, config.temporal.workflow_id_prefix) in started.output
    again = await asyncio.to_thread(cli, "onboard", name)
    assert again.exit_code == 1 and "already running" in again.output

    async with orchestrator_worker(client, config, review_drivers(config)):
        handle = client.get_workflow_handle(
            onboard_id(name, REGION, config.temporal.workflow_id_prefix))
        await handle.result()
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    shown = await asyncio.to_thread(cli, "status", f"{name}/{REGION}")
    assert shown.exit_code == 0, shown.output
    assert "preflight" in shown.output and "passed" in shown.output
    assert "not implemented yet" in shown.output and "quota/cores" in shown.output
    listed = await asyncio.to_thread(cli, "list")
    assert "COMPLETED" in listed.output and "preflight passed" in listed.output
    as_json = await asyncio.to_thread(cli, "status", REGION, "--json")
    assert as_json.exit_code == 0, as_json.output
    shown_status = OnboardingStatus.model_validate(json.loads(as_json.output)["status"])
    assert shown_status.phase("preflight").state == "passed"
    listed_json = json.loads((await asyncio.to_thread(cli, "list", "--json")).output)
    assert [(r["region"], r["execution"]) for r in listed_json] == [(REGION, "COMPLETED")]


async def test_worker_crash_during_preflight_resumes_on_another_worker(
    client: Client, cloud: OnboardingCloud, tmp_path: Path
) -> None:
    """The first worker dies while preflight runs; a new worker retries the (read-only)
    activity and the same workflow finishes: no second workflow, nothing made twice."""
    config = deployment(tmp_path, cloud)
    queue = task_queue(config.temporal.task_queue_prefix, Role.ORCHESTRATOR)
    started = asyncio.Event()

    @activity.defn(name="onboarding_preflight")
    async def hangs(request: PreflightRequest) -> PreflightReport:
        started.set()
        await asyncio.sleep(3600)  # cancelled when its worker shuts down
        raise AssertionError("not reached")

    first = Worker(client, task_queue=queue, workflows=[OnboardingWorkflow], activities=[hangs],
                   workflow_runner=workflow_runner())
    async with first:
        handle = await start_onboarding(client, config, config.clouds[0].name, REGION, "carol")
        await asyncio.wait_for(started.wait(), 60)
        running = await handle.query("status", result_type=OnboardingStatus)
        assert running.phase("preflight").state == "running"
    async with orchestrator_worker(client, config, review_drivers(config)):
        status = await handle.result()
    assert status.phase("preflight").state == "passed", status.preflight
    attempts = [e.activity_task_started_event_attributes.attempt
                for e in (await handle.fetch_history()).events
                if e.HasField("activity_task_started_event_attributes")]
    assert attempts == [2]  # the retry after the crash (the first attempt's start is not kept)


async def test_dns_preflight_when_dns_is_configured(
    client: Client, cloud: OnboardingCloud, tmp_path: Path,
    pdns_server: PdnsServer,  # noqa: F811
) -> None:
    """With `dns:` configured, preflight also asks the DNS server (real PowerDNS) whether the
    mirror's name can be made; a zone that does not exist fails with its fix."""
    config = deployment(tmp_path, cloud)
    name = config.clouds[0].name
    config.dns = DnsConfig(api_url=pdns_server.api_url, api_key_file=pdns_server.api_key_file,
                           zone=pdns_server.zone)
    async with orchestrator_worker(client, config, review_drivers(config)):
        status = await (await start_onboarding(client, config, name, REGION, "dave")).result()
        assert status.preflight is not None and status.preflight.ok, status.preflight
        dns = [c for c in status.preflight.checks if c.name == "dns"]
        assert len(dns) == 1
        assert f"mirror.regionone.{name}.{pdns_server.zone}" in dns[0].message

        config.dns = DnsConfig(api_url=pdns_server.api_url,
                               api_key_file=pdns_server.api_key_file, zone="absent.example")
        status = await (await start_onboarding(client, config, name, REGION, "dave")).result()
    assert status.preflight is not None
    assert [c.name for c in status.preflight.failed()] == ["dns"]
    assert "absent.example" in status.preflight.failed()[0].message
