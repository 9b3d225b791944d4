"""The TE broker survives what broke the old gearman broker: the Temporal server restarting with
leases outstanding, an executor killed while its job holds a TE, and long lives (continue-as-new
with leases and waiters carried over)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.testenv import BrokerStatus, LeaseRef, LeaseState, LeaseStatus, TEState
from lockmaster.review.registry import review_drivers
from lockmaster.starters.testenv import TEBrokers, ensure_brokers
from lockmaster.temporal.client import connect
from lockmaster.temporal.devserver import DevServer
from lockmaster.workers.orchestrator import orchestrator_worker
from lockmaster.workflows.testenv import te_host_queue
from tests.ports import restartable_port
from tests.test_te_broker_workflow import (
    RecordingHost,
    all_available,
    broker,
    holder,
    te_config,
    wait_for,
)


@contextlib.asynccontextmanager
async def te_workers(client: Client, config: LockmasterConfig, host: RecordingHost
                     ) -> AsyncIterator[None]:
    """The orchestrator (brokers) and the TE hosts' workers, without waiting for anything."""
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(orchestrator_worker(client, config,
                                                            review_drivers(config)))
        for h in config.testenvs.hosts:
            await stack.enter_async_context(Worker(
                client, task_queue=te_host_queue(config.temporal.task_queue_prefix, h.name),
                activities=[host.authorize, host.reset]))
        yield


def broker_handle(client: Client, config: LockmasterConfig, label: str = "default"):  # type: ignore[no-untyped-def]
    return client.get_workflow_handle(f"{config.temporal.workflow_id_prefix}te/{label}")


async def lease_status(client: Client, config: LockmasterConfig, lease_id: str) -> LeaseStatus:
    return await broker_handle(client, config).query("lease_status", LeaseRef(id=lease_id),
                                                     result_type=LeaseStatus)


@pytest.mark.slow
async def test_server_restarted_with_leases_outstanding(tmp_path: Path) -> None:
    """Two TEs leased and a third holder waiting when the dev server (SQLite) stops: after it
    comes back, the same leases hold the same TEs with the same generations, the waiter is still
    first in line, renewals work, and a release hands the TE on exactly once."""
    server = DevServer(tmp_path / "temporal.db", port=restartable_port(),
                       ui_port=restartable_port())
    await server.start()
    try:
        config = te_config(tmp_path, per_host=2, ttl=60)
        config.temporal.address = f"127.0.0.1:{server.port}"
        client = await connect(config)
        host = RecordingHost()
        async with te_workers(client, config, host):
            await ensure_brokers(client, config)
            ops = TEBrokers(client, config)
            await wait_for(lambda: all_available(ops), "both TEs reset")
            a, b = holder(client, config, "a"), holder(client, config, "b")
            lease_a = await a.acquire(timeout=10)
            lease_b = await b.acquire(timeout=10)
            c = holder(client, config, "c")
            waiting = asyncio.create_task(c.acquire(timeout=120))
            await wait_for(lambda: _waiting(ops, ["c"]), "c queued")
            [before] = await ops.status()

        await server.stop()
        await server.start()

        client = await connect(config)
        async with te_workers(client, config, host):
            ops = TEBrokers(client, config)
            [after] = await ops.status()
            assert _held(after) == _held(before)
            assert {v.lease_id: v.generation for v in after.tes} == {"a": 1, "b": 1}
            assert [w.id for w in after.waiting] == ["c"] and not waiting.done()
            # The holders' own clients reconnect: renewals go through.
            assert (await a.renew()).state is LeaseState.GRANTED
            assert (await b.renew()).state is LeaseState.GRANTED
            assert lease_a.te is not None and lease_b.te is not None
            assert (await a.release()).ok
            granted = await waiting
            assert granted.te is not None and granted.te.key == lease_a.te.key
            assert granted.generation == 2
            [final] = await ops.status()
            assert sorted((v.lease_id, v.generation) for v in final.tes) == [("b", 1), ("c", 2)]
            assert final.waiting == []
            await b.release()
            await c.release()
            await wait_for(lambda: all_available(ops), "both TEs back")
    finally:
        await server.stop()


async def _waiting(ops: TEBrokers, ids: list[str]) -> bool:
    [status] = await ops.status()
    return [w.id for w in status.waiting] == ids


def _held(status: BrokerStatus) -> dict[str, tuple[str | None, int, TEState]]:
    return {v.key: (v.lease_id, v.generation, v.state) for v in status.tes}


async def test_broker_continues_as_new_with_leases_and_waiters(client: Client,
                                                               tmp_path: Path) -> None:
    """A low history limit forces continue-as-new several times while a TE is held and another
    holder waits: the lease, its generation and the queue carry over."""
    config = te_config(tmp_path, per_host=1)
    host = RecordingHost()
    async with broker(client, config, host, max_history_events=40) as ops:
        handle = broker_handle(client, config)
        first_run = (await handle.describe()).run_id
        a = holder(client, config, "a")
        lease = await a.acquire(timeout=10)
        b = holder(client, config, "b")
        waiting = asyncio.create_task(b.acquire(timeout=60))
        runs = {first_run}
        for _ in range(40):  # each renewal is an update: history grows until it starts anew
            assert (await a.renew()).generation == 1
            runs.add((await client.get_workflow_handle(handle.id).describe()).run_id)
            if len(runs) >= 3:
                break
        assert len(runs) >= 3, "the broker never continued as new"
        [status] = await ops.status()
        assert [(v.lease_id, v.generation) for v in status.tes] == [("a", 1)]
        assert [w.id for w in status.waiting] == ["b"] and not waiting.done()
        stale = await ops.renew("default", "a", 7)
        assert stale.state is LeaseState.ENDED and "stale" in (stale.reason or "")
        assert (await a.release()).ok
        granted = await waiting
        assert lease.te is not None and granted.te is not None
        assert granted.te.key == lease.te.key and granted.generation == 2
        assert host.resets[lease.te.key] == 2  # before first use and between the two leases
        await b.release()


def start_executor(config_file: Path, log: Path) -> subprocess.Popen[bytes]:
    lockmaster = Path(sys.executable).parent / "lockmaster"
    return subprocess.Popen([lockmaster, "worker", "executor", "--config", str(config_file)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.mark.slow
async def test_executor_killed_while_its_job_holds_a_te(
        temporal_env: WorkflowEnvironment, client: Client, tmp_path: Path) -> None:
    """The executor running a job that holds a TE is SIGKILLed: nobody renews the lease, so it
    expires after the lease TTL, the holder's key is revoked and the TE reset; the build runs
    again on another executor, which gets the TE under the next generation."""
    from tests.deployment import deployment, unique_project

    name = unique_project()
    marker = tmp_path / "first-run"
    base = te_config(tmp_path, per_host=1, ttl=3)
    data = base.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["projects"] = [{"name": name, "connection": "local",
                         "pipelines": {"check": {"jobs": ["devtest"]}}}]
    run = (f'python3 -c "import json,os; print(\'generation\', '
           f'json.load(open(os.environ[\'TE_DATAFILE\']))[\'lease\'][\'generation\'])"; '
           f"if [ -f {marker} ]; then echo second run; else touch {marker}; sleep 120; fi")
    data["jobs"] = [{"name": "devtest", "run": run, "nodeset": "local", "testenv": "default"}]
    data["temporal"]["address"] = temporal_env.client.service_client.config.target_host
    config = LockmasterConfig.model_validate(data)
    config_file = tmp_path / "lockmaster.yaml"
    config_file.write_text(yaml.safe_dump(data))
    log = tmp_path / "executor.log"
    host = RecordingHost()
    async with deployment(client, config, executor=False, heartbeat_timeout=3) as dep, \
            broker(client, config, host, orchestrator=False) as ops:
        dep.store.create_project(name, {"README": "x\n"})
        first = start_executor(config_file, log)
        second: subprocess.Popen[bytes] | None = None
        try:
            _, actions = await dep.upload(name, files={"a": "a\n"}, subject="uses a TE")
            wid = actions[0].workflow_id or ""
            await wait_for(lambda: _exists(marker), "the job running with its TE", timeout=60)
            [status] = await ops.status()
            [te] = status.tes
            assert te.state is TEState.LEASED and te.generation == 1
            lease_id = te.lease_id or ""
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()

            async def expired() -> bool:
                s = await lease_status(client, config, lease_id)
                return s.state is LeaseState.ENDED

            await wait_for(expired, "the dead executor's lease to expire", timeout=30)
            ended = await lease_status(client, config, lease_id)
            assert "expired" in (ended.reason or ""), ended
            await wait_for(lambda: _reset_count(host, te.key, 2), "the TE reset after expiry")
            assert te.key not in host.authorized  # the dead holder's key no longer works
            second = start_executor(config_file, log)
            outcome = await dep.outcome(wid, timeout=120)
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(30)
        assert outcome.result == "SUCCESS", log.read_text()
        logs = [f.read_text() for f in config.logs_root.rglob("job-output.txt")]
        [final] = [text for text in logs if "RESULT: SUCCESS" in text]
        assert "generation 2" in final and "second run" in final
        # The try after the executor died asked for a TE anew and got one: no attempt was
        # spent on a refused (ended) lease.
        assert "Attempt: 1 of" in final, final
        await wait_for(lambda: all_available(ops), "the TE back after the job")
        [status] = await ops.status()
        assert status.tes[0].generation == 2 and host.resets[te.key] == 3


async def _exists(path: Path) -> bool:
    return path.exists()


async def _reset_count(host: RecordingHost, key: str, count: int) -> bool:
    return host.resets[key] >= count
