"""The mirror DNS step and its compensation run by a real Temporal worker (the session's dev
server) against a real PowerDNS, in a minimal saga of this module's own (the onboarding
workflow, which will hold the real saga, is another part of issue 17): the name resolves after
success, is gone after a later step fails, and a retry after a crash following the write
writes nothing twice."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from lockmaster.model.base import Model
from lockmaster.model.dns import DeleteMirrorDnsRequest, EnsureMirrorDnsRequest, MirrorDnsResult

with workflow.unsafe.imports_passed_through():
    from lockmaster.activities.dns import DnsActivities
    from lockmaster.config.dns import DnsConfig
    from lockmaster.workers.common import workflow_runner
    from tests.fixtures.pdns import PdnsServer, pdns_server  # noqa: F401 (a fixture)
    from tests.test_clouds_dns import resolve


class SagaInput(Model):
    ensure: EnsureMirrorDnsRequest
    probe_fails: bool


class SagaResult(Model):
    name: str
    rolled_back: bool
    ensure_attempts_changed: bool  # what the successful ensure attempt reported


class ProbeInput(Model):
    name: str
    fail: bool


@activity.defn(name="probe_mirror_for_test")
async def probe_mirror(probe: ProbeInput) -> None:
    if probe.fail:
        raise ApplicationError(f"mirror {probe.name} does not answer over HTTP",
                               non_retryable=True)


@workflow.defn(name="MirrorDnsSagaForTest", sandboxed=True)
class MirrorDnsSaga:
    @workflow.run
    async def run(self, saga: SagaInput) -> SagaResult:
        opts = {"start_to_close_timeout": timedelta(seconds=30),
                "retry_policy": RetryPolicy(initial_interval=timedelta(milliseconds=100),
                                            maximum_attempts=3)}
        ensure = saga.ensure
        # The compensation is known before the step runs: a crash right after the write still
        # rolls back.
        compensation = DeleteMirrorDnsRequest(dns=ensure.dns, cloud=ensure.cloud,
                                              region=ensure.region)
        made = await workflow.execute_activity("ensure_mirror_dns", ensure,
                                               result_type=MirrorDnsResult, **opts)
        try:
            await workflow.execute_activity(probe_mirror, ProbeInput(name=made.name,
                                                                     fail=saga.probe_fails),
                                            **opts)
        except ActivityError:
            await workflow.execute_activity("delete_mirror_dns", compensation,
                                            result_type=MirrorDnsResult, **opts)
            return SagaResult(name=made.name, rolled_back=True,
                              ensure_attempts_changed=made.changed)
        return SagaResult(name=made.name, rolled_back=False, ensure_attempts_changed=made.changed)


real = DnsActivities()


@activity.defn(name="ensure_mirror_dns")
async def ensure_then_crash_once(request: EnsureMirrorDnsRequest) -> MirrorDnsResult:
    """The real activity, but the first attempt is lost after its write (a worker crash)."""
    result = await real.ensure_mirror_dns(request)
    if activity.info().attempt == 1:
        raise RuntimeError("worker lost after the write (simulated)")
    return result


async def run_saga(client: Client, activities: list, saga: SagaInput) -> SagaResult:
    queue = f"mirror-dns-saga-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[MirrorDnsSaga],
                      activities=activities, workflow_runner=workflow_runner()):
        return await client.execute_workflow(
            MirrorDnsSaga.run, saga, id=f"test/mirror-dns/{uuid.uuid4().hex[:8]}",
            task_queue=queue, result_type=SagaResult,
            execution_timeout=timedelta(seconds=60))


def request_for(server: PdnsServer) -> EnsureMirrorDnsRequest:
    dns = DnsConfig.model_validate({"api-url": server.api_url,
                                    "api-key-file": str(server.api_key_file),
                                    "zone": server.zone, "ttl": 60})
    return EnsureMirrorDnsRequest(dns=dns, cloud="examplecloud",
                                  region=f"r{uuid.uuid4().hex[:8]}", addresses=["192.0.2.60"])


@pytest.mark.parametrize("probe_fails", [False, True])
async def test_saga_step_and_rollback(client: Client, pdns_server: PdnsServer,
                                      probe_fails: bool) -> None:
    request = request_for(pdns_server)
    result = await run_saga(client, [real.ensure_mirror_dns, real.delete_mirror_dns,
                                     probe_mirror],
                            SagaInput(ensure=request, probe_fails=probe_fails))
    assert result.name == f"mirror.{request.region}.examplecloud.{pdns_server.zone}"
    assert result.rolled_back is probe_fails
    assert resolve(pdns_server, result.name, "A") == ([] if probe_fails else ["192.0.2.60"])


async def test_crash_after_the_write_writes_nothing_twice(
        client: Client, pdns_server: PdnsServer) -> None:
    request = request_for(pdns_server)
    result = await run_saga(client, [ensure_then_crash_once, real.delete_mirror_dns,
                                     probe_mirror],
                            SagaInput(ensure=request, probe_fails=True))
    # The retried attempt found the record already so; the rollback still removed it.
    assert result.ensure_attempts_changed is False
    assert result.rolled_back
    assert resolve(pdns_server, result.name, "A") == []
