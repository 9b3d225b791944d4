"""One reconcile round of declarative cloud resources run by a real Temporal worker (the session's
dev server, pydantic data converter) against Keystone + the fake cloud, in a minimal workflow of
this module's own (the onboarding workflow, another part of issue 17, will hold the real one):
the steps cross Temporal as data, the plan is made inside the workflow, and a step whose result
was lost after the cloud made the resource is retried without making it twice."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

from lockmaster.model.base import Model

with workflow.unsafe.imports_passed_through():
    from lockmaster.activities.cloud_resources import (
        ApplyRequest,
        CloudRef,
        ObserveRequest,
        ResolveRequest,
        apply_cloud_resource_step,
        observe_cloud_resources,
        resolve_cloud_resources,
    )
    from lockmaster.clouds.resource_record import record_step
    from lockmaster.clouds.resources import (
        Desired,
        Drift,
        Observed,
        ResourceRecord,
        ResourceSpec,
        StepResult,
        SwitchKeypair,
        plan,
    )
    from lockmaster.workers.common import workflow_runner
    from tests.fakes.openstack_cloud import FakeOpenStack

if TYPE_CHECKING:
    from tests.fixtures.openstack import CloudConfig

OWNER = "fakecloud.t1"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC c@x"


class RoundInput(Model):
    cloud: CloudRef
    spec: ResourceSpec
    record: ResourceRecord


class RoundResult(Model):
    record: ResourceRecord
    actions: list[str]
    details: list[str]
    drift: list[Drift]


@workflow.defn(name="CloudResourcesRoundForTest", sandboxed=True)
class ResourcesRound:
    @workflow.run
    async def run(self, round_: RoundInput) -> RoundResult:
        opts = {
            "start_to_close_timeout": timedelta(seconds=30),
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(milliseconds=100), maximum_attempts=3
            ),
        }
        desired = await workflow.execute_activity(
            "resolve_cloud_resources",
            ResolveRequest(spec=round_.spec),
            result_type=Desired,
            **opts,
        )
        observed = await workflow.execute_activity(
            "observe_cloud_resources",
            ObserveRequest(cloud=round_.cloud, owner=OWNER),
            result_type=Observed,
            **opts,
        )
        made = plan(round_.spec, desired, observed, round_.record)  # pure: fine in a workflow
        record, details = made.record, []
        for step in made.steps:
            if isinstance(step, SwitchKeypair):
                continue  # the pool's side; not exercised here
            done = await workflow.execute_activity(
                "apply_cloud_resource_step",
                ApplyRequest(cloud=round_.cloud, owner=OWNER, step=step),
                result_type=StepResult,
                **opts,
            )
            record = record_step(record, done)
            details.append(done.detail)
        return RoundResult(
            record=record,
            actions=[s.action for s in made.steps],
            details=details,
            drift=made.drift,
        )


@activity.defn(name="apply_cloud_resource_step")
async def apply_then_crash_once(request: ApplyRequest) -> StepResult:
    """The real activity, but each step's first attempt is lost after the cloud call."""
    result = await apply_cloud_resource_step(request)
    if activity.info().attempt == 1:
        raise RuntimeError("worker lost after the cloud call (simulated)")
    return result


async def run_round(client: Client, apply: object, round_: RoundInput) -> RoundResult:
    queue = f"cloud-resources-{uuid.uuid4().hex[:8]}"
    activities = [resolve_cloud_resources, observe_cloud_resources, apply]
    async with Worker(
        client,
        task_queue=queue,
        workflows=[ResourcesRound],
        activities=activities,
        workflow_runner=workflow_runner(),
    ):
        return await client.execute_workflow(
            ResourcesRound.run,
            round_,
            id=f"test/cloud-resources/{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            result_type=RoundResult,
            execution_timeout=timedelta(seconds=60),
        )


def make_round(cloud_config: CloudConfig, tmp_path: Path) -> RoundInput:
    (tmp_path / "k.pub").write_text(KEY)
    (tmp_path / "img.qcow2").write_bytes(b"base image")
    spec = ResourceSpec.model_validate(
        {
            "owner": OWNER,
            "keypairs": [{"name": "nodes", "public_key_file": str(tmp_path / "k.pub")}],
            "security_groups": [
                {"name": "nodes", "rules": [{"protocol": "tcp", "port_min": 22, "port_max": 22}]}
            ],
            "images": [{"name": "debian-12", "file": str(tmp_path / "img.qcow2")}],
        }
    )
    cloud = CloudRef(
        cloud=cloud_config.cloud,
        region=cloud_config.region,
        clouds_file=str(cloud_config.clouds_file),
    )
    return RoundInput(cloud=cloud, spec=spec, record=ResourceRecord())


async def test_a_round_in_a_workflow_then_nothing_to_do(
    client: Client, cloud_config: CloudConfig, fake_openstack: FakeOpenStack, tmp_path: Path
) -> None:
    first_in = make_round(cloud_config, tmp_path)
    first = await run_round(client, apply_cloud_resource_step, first_in)
    assert sorted(first.actions) == ["create-keypair", "create-security-group", "upload-image"]
    assert set(first.details) == {"created", "uploaded"}
    assert set(first.record.security_groups) == {"nodes"} and len(first.record.images) == 1
    second = await run_round(
        client, apply_cloud_resource_step, first_in.model_copy(update={"record": first.record})
    )
    assert second.actions == [] and second.drift == []


async def test_results_lost_after_the_cloud_call_make_nothing_twice(
    client: Client, cloud_config: CloudConfig, fake_openstack: FakeOpenStack, tmp_path: Path
) -> None:
    result = await run_round(client, apply_then_crash_once, make_round(cloud_config, tmp_path))
    assert sorted(result.details) == sorted(
        ["already there", "adopted (tagged ours)", "adopted (uploaded before)"]
    )
    assert (
        len(fake_openstack.keypair_creates),
        len(fake_openstack.group_creates),
        len(fake_openstack.image_creates),
        len(fake_openstack.rule_creates),
    ) == (1, 1, 1, 1)
    [image_id] = result.record.images
    assert image_id in fake_openstack.images
