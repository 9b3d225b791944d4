"""The TE broker workflow on the real dev server (and the time-skipping server for expiry).

The TE host's activities are stood in for by `RecordingHost` at the activity boundary, so these
tests can make a host slow, fail or die at will; the real host side (libvirt, authorized_keys,
the forced command) is tested in tests/test_te_host.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.testenv import (
    LeaseRef,
    LeaseState,
    LeaseStatus,
    TEAuthorize,
    TEHostResult,
    TEReset,
    TEState,
)
from lockmaster.review.registry import review_drivers
from lockmaster.starters.testenv import TEBrokers, TEError, TEHolder, ensure_brokers
from lockmaster.temporal.devserver import test_server_binary as time_skipping_binary
from lockmaster.workers.orchestrator import orchestrator_worker
from lockmaster.workflows.testenv import te_host_queue
from tests.deployment import make_config

HOLDERS = 200


class RecordingHost:
    """Stands in for a TE host's worker: records who holds what, can be told to fail."""

    def __init__(self) -> None:
        self.authorized: dict[str, tuple[int, str]] = {}  # te -> (generation, key)
        self.resets: Counter[str] = Counter()
        self.fail_reset: set[str] = set()
        self.stall_next_reset = False
        self.reset_started = asyncio.Event()

    @activity.defn(name="te_authorize")
    async def authorize(self, request: TEAuthorize) -> TEHostResult:
        self.authorized[request.te.key] = (request.generation, request.public_key)
        return TEHostResult(ok=True)

    @activity.defn(name="te_reset")
    async def reset(self, request: TEReset) -> TEHostResult:
        self.authorized.pop(request.te.key, None)
        self.reset_started.set()
        if self.stall_next_reset:
            self.stall_next_reset = False
            await asyncio.sleep(3600)  # a worker that died mid-reset: never heartbeats
        self.resets[request.te.key] += 1
        if request.te.key in self.fail_reset:
            return TEHostResult(ok=False, error=f"bridge {request.te.bridge} is missing")
        return TEHostResult(ok=True)


def te_config(tmp_path: Path, hosts: int = 1, per_host: int = 2, ttl: float = 30.0
              ) -> LockmasterConfig:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    config = make_config(tmp_path, projects=[], jobs=[], prefix=prefix)
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["temporal"]["workflow-id-prefix"] = f"{prefix}/"
    data["testenvs"] = {"lease-ttl": ttl, "hosts": [
        {"name": f"tehost{h}", "address": "127.0.0.1", "host-key": "ssh-ed25519 AAAAC3Nza",
         "te-count": per_host, "first-env": 1 + h * per_host, "nodes-per-te": 1}
        for h in range(hosts)]}
    return LockmasterConfig.model_validate(data)


@contextlib.asynccontextmanager
async def broker(client: Client, config: LockmasterConfig, host: RecordingHost, *,
                 orchestrator: bool = True, **kw: object) -> AsyncIterator[TEBrokers]:
    prefix = config.temporal.task_queue_prefix
    async with contextlib.AsyncExitStack() as stack:
        if orchestrator:  # else the test's deployment runs it
            await stack.enter_async_context(orchestrator_worker(client, config,
                                                                review_drivers(config)))
        for h in config.testenvs.hosts:
            await stack.enter_async_context(Worker(
                client, task_queue=te_host_queue(prefix, h.name),
                activities=[host.authorize, host.reset]))
        await ensure_brokers(client, config, **kw)  # type: ignore[arg-type]
        ops = TEBrokers(client, config)
        await wait_for(lambda: all_available(ops), "every TE reset and available")
        yield ops


async def all_available(ops: TEBrokers) -> bool:
    [status] = await ops.status()
    return all(te.state is TEState.AVAILABLE for te in status.tes)


async def wait_for(check, what: str, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


def holder(client: Client, config: LockmasterConfig, name: str, **kw: object) -> TEHolder:
    return TEHolder(client, config, "default", name, f"test {name}", **kw)  # type: ignore[arg-type]


async def test_lease_renew_release_and_stale_generation(client: Client, tmp_path: Path) -> None:
    config = te_config(tmp_path)
    host = RecordingHost()
    async with broker(client, config, host) as ops:
        first = holder(client, config, "a")
        status = await first.acquire(timeout=10)
        assert status.state is LeaseState.GRANTED and status.te is not None
        assert status.generation == 1
        # The host accepts exactly this holder's key for this generation.
        assert host.authorized[status.te.key][0] == 1
        assert host.authorized[status.te.key][1].startswith("ssh-ed25519 ")
        assert "PRIVATE KEY" in first.private_key
        datafile = first.write_datafile(tmp_path / "te.json")
        assert datafile.stat().st_mode & 0o777 == 0o600
        assert (await first.renew()).state is LeaseState.GRANTED
        stale = await ops.renew("default", "a", 99)
        assert stale.state is LeaseState.ENDED and "stale generation 99" in (stale.reason or "")
        refused = await ops.release("default", "a", 99)
        assert not refused.ok and "stale" in refused.message
        assert (await first.release()).ok
        await wait_for(lambda: all_available(ops), "reset after release")
        assert host.resets[status.te.key] == 2  # before first use, and after the lease
        with pytest.raises(TEError, match="released"):
            await first.renew()


async def test_requests_wait_their_turn_in_order(client: Client, tmp_path: Path) -> None:
    config = te_config(tmp_path, per_host=1)
    host = RecordingHost()
    async with broker(client, config, host) as ops:
        first = holder(client, config, "first")
        await first.acquire(timeout=10)
        check = holder(client, config, "check", precedence=1)
        gate = holder(client, config, "gate", precedence=0)
        check_task = asyncio.create_task(check.acquire(timeout=30))
        await asyncio.sleep(0.3)
        gate_task = asyncio.create_task(gate.acquire(timeout=30))
        await asyncio.sleep(0.3)
        [status] = await ops.status()
        assert [w.id for w in status.waiting] == ["gate", "check"]
        await first.release()
        granted = await gate_task
        assert granted.generation == 2 and not check_task.done()
        await gate.release()
        assert (await check_task).generation == 3
        await check.release()


async def test_failed_reset_quarantines_drain_and_force_release(
        client: Client, tmp_path: Path) -> None:
    config = te_config(tmp_path, hosts=2, per_host=1)
    host = RecordingHost()
    async with broker(client, config, host) as ops:
        a = holder(client, config, "a")
        lease = await a.acquire(timeout=10)
        assert lease.te is not None
        host.fail_reset.add(lease.te.key)
        await a.release()

        async def quarantined() -> bool:
            [status] = await ops.status()
            return any(t.state is TEState.QUARANTINED for t in status.tes)

        await wait_for(quarantined, "quarantine")
        [status] = await ops.status()
        [bad] = [t for t in status.tes if t.state is TEState.QUARANTINED]
        assert "bridge" in (bad.reason or "")
        # Drain the other host: nothing is left to hand out.
        other = next(t for t in status.tes if t.key != bad.key)
        assert "draining" in (await ops.drain(other.host)).message
        waiting = holder(client, config, "b")
        with pytest.raises(TimeoutError):
            await waiting.acquire(timeout=1.0)
        host.fail_reset.clear()
        assert (await ops.unquarantine(bad.key)).ok
        assert not (await ops.unquarantine(bad.key)).ok  # only a quarantined TE
        c = holder(client, config, "c")
        granted = await c.acquire(timeout=10)
        assert granted.te is not None and granted.te.key == bad.key
        answer = await ops.force_release(bad.key)
        assert answer.ok
        with pytest.raises(TEError, match="force-released"):
            await c.renew()
        assert "back in service" in (await ops.undrain(other.host)).message
        with pytest.raises(TEError, match="no TE host 'nope'"):
            await ops.drain("nope")


async def test_host_worker_dead_mid_reset_keeps_the_te_from_everyone(
        client: Client, tmp_path: Path) -> None:
    config = te_config(tmp_path, per_host=1)
    host = RecordingHost()
    async with broker(client, config, host, reset_heartbeat_timeout=1.0) as ops:
        a = holder(client, config, "a")
        lease = await a.acquire(timeout=10)
        assert lease.te is not None
        host.stall_next_reset = True
        host.reset_started.clear()
        await a.release()
        await host.reset_started.wait()
        b = holder(client, config, "b")
        waiting = asyncio.create_task(b.acquire(timeout=30))
        await asyncio.sleep(0.5)
        [status] = await ops.status()
        assert status.tes[0].state is TEState.RESETTING and not waiting.done()
        # The stalled reset times out (no heartbeat) and runs again; then b gets the TE.
        granted = await waiting
        assert granted.generation == 2 and host.resets[lease.te.key] >= 2
        await b.release()


@pytest.mark.slow
async def test_many_holders_few_tes_each_served_once(client: Client, tmp_path: Path) -> None:
    """200 holders at once for 10 TEs: each served once, no TE ever held by two."""
    config = te_config(tmp_path, hosts=2, per_host=5)
    host = RecordingHost()
    held: set[str] = set()
    double = []
    served: list[str] = []
    async with broker(client, config, host, max_history_events=2000):
        async def use(i: int) -> None:
            h = holder(client, config, f"r{i:03d}")
            status = await h.acquire(timeout=300)
            assert status.te is not None
            if status.te.key in held:
                double.append(status.te.key)
            held.add(status.te.key)
            served.append(h.lease_id)
            await asyncio.sleep(0.05)
            held.discard(status.te.key)
            await h.release()

        await asyncio.gather(*(use(i) for i in range(HOLDERS)))
    assert double == []
    assert sorted(served) == [f"r{i:03d}" for i in range(HOLDERS)]


async def test_expiry_revokes_a_silent_holder(tmp_path: Path) -> None:
    """On the time-skipping server: an hour-long TTL passes in moments."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_binary(),
        data_converter=pydantic_data_converter)
    try:
        config = te_config(tmp_path, per_host=1, ttl=3600)
        host = RecordingHost()
        async with broker(env.client, config, host) as ops:
            silent = holder(env.client, config, "silent")
            lease = await silent.acquire(timeout=30)
            assert silent._renewer is not None
            silent._renewer.cancel()  # the holder goes quiet (killed)
            assert lease.te is not None
            await env.sleep(3700)
            handle = env.client.get_workflow_handle(f"{config.temporal.workflow_id_prefix}"
                                                    "te/default")
            ended = await handle.query("lease_status", LeaseRef(id="silent"),
                                       result_type=LeaseStatus)
            assert ended.state is LeaseState.ENDED and "expired" in (ended.reason or "")
            assert lease.te.key not in host.authorized  # its key was revoked by the reset
            await wait_for(lambda: all_available(ops), "reset after expiry")
    finally:
        await env.shutdown()


async def test_job_with_a_testenv_gets_its_datafile_and_gives_the_te_back(
        client: Client, tmp_path: Path) -> None:
    from tests.deployment import deployment, unique_project

    name = unique_project()
    base = te_config(tmp_path, per_host=1)
    data = base.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["projects"] = [{"name": name, "connection": "local",
                         "pipelines": {"check": {"jobs": ["devtest"]}}}]
    check = ('python3 -c "import json,os,stat; d=json.load(open(os.environ[\'TE_DATAFILE\'])); '
             "assert d['env-num'] == 1 and d['nodes'][0]['mac'][0].startswith('52:54:00'); "
             "assert 'PRIVATE KEY' in d['ssh-key']; "
             "assert d['remote-operations'] == '1'; "
             "assert d['nodes'][0]['pm_password'] == d['ssh-key']; "
             "assert d['baremetal-network']['seed']['ip'] == d['seed-ip']; "
             "assert stat.S_IMODE(os.stat(os.environ['TE_DATAFILE']).st_mode) == 0o600; "
             "print('TE', d['te'], d['lease']['generation'])\"")
    data["jobs"] = [{"name": "devtest", "run": check, "nodeset": "local", "testenv": "default"}]
    config = LockmasterConfig.model_validate(data)
    host = RecordingHost()
    async with deployment(client, config) as dep, \
            broker(client, config, host, orchestrator=False) as ops:
        dep.store.create_project(name, {"README": "x\n"})
        _, actions = await dep.upload(name, files={"a": "a\n"}, subject="uses a TE")
        outcome = await dep.outcome(actions[0].workflow_id or "", timeout=60)
        assert outcome.result == "SUCCESS", outcome
        log = next((config.logs_root).rglob("job-output.txt")).read_text()
        assert "Test environment: tehost0/te1 (generation 1)" in log
        assert "TE tehost0/te1 1" in log
        await wait_for(lambda: all_available(ops), "TE back after the job")
        [status] = await ops.status()
        assert status.tes[0].generation == 1 and host.resets["tehost0/te1"] == 2


async def test_real_te_host_worker_accepts_the_holders_key_only_during_the_lease(
        client: Client, tmp_path: Path) -> None:
    """The broker with the real TE-host worker (libvirt's test driver, authorized_keys)."""
    from lockmaster.workers.te_host import te_access_dir, te_host_worker

    config = te_config(tmp_path, per_host=1)
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["testenvs"]["hosts"][0]["first-env"] = 7  # domains of its own in this process
    config = LockmasterConfig.model_validate(data)
    keys = Path(te_access_dir(config)) / "authorized_keys"
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(orchestrator_worker(client, config,
                                                            review_drivers(config)))
        await stack.enter_async_context(te_host_worker(client, config, "tehost0"))
        await ensure_brokers(client, config)
        ops = TEBrokers(client, config)
        await wait_for(lambda: all_available(ops), "first reset on the real host")
        h = holder(client, config, "real")
        status = await h.acquire(timeout=20)
        assert status.te is not None and status.te.key == "tehost0/te7"
        public = keys.read_text()
        assert "lockmaster-te:tehost0/te7:1" in public and 'command="' in public
        assert (await h.release()).ok
        await wait_for(lambda: all_available(ops), "reset after release")
        assert "lockmaster-te:tehost0/te7" not in keys.read_text()
