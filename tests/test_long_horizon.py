"""The long-lived workflows over a long horizon: they continue as new again and again with work in
flight and never stop deciding meanwhile (issue: "continue-as-new drains first", "silent
wedge"). The gate and a pool run on the dev server with real git, real jobs and the fake cloud;
a TE broker with a host that is down throughout runs on the time-skipping server, so hours pass
in moments."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from lockmaster.model.gate_compact import expand, is_compact
from lockmaster.model.nodes import NodeState
from lockmaster.model.testenv import (
    LeaseRef,
    LeaseState,
    LeaseStatus,
    TEAuthorize,
    TEHostResult,
    TEReset,
    TEState,
)
from lockmaster.nodes.pooled import PooledNodes
from lockmaster.review.local import LocalReviewDriver
from lockmaster.review.registry import review_drivers
from lockmaster.starters.nodepool import NodePools, ensure_pools
from lockmaster.starters.operator import GATE_TASK_TIMEOUT, enqueue_change
from lockmaster.starters.testenv import TEBrokers, ensure_brokers
from lockmaster.workers.launcher import launcher_worker
from lockmaster.workers.orchestrator import orchestrator_worker
from lockmaster.workflows.testenv import te_host_queue
from tests.deployment import deployment, unique_project
from tests.fakes.openstack_cloud import FakeOpenStack
from tests.fixtures.openstack import CloudConfig
from tests.fixtures.sshd import SSHServer
from tests.test_gate_workflow import gate_config, merged_order, settle, wait_status
from tests.test_nodepool_cloud import pool_config, pool_status, until
from tests.test_te_broker_workflow import holder, te_config

APPROVED = {"Code-Review": 2, "Workflow": 1}


async def runs_of(client: Client, workflow_id: str) -> list[WorkflowHandle[Any, Any]]:
    """Every run of a workflow, oldest first."""
    found = [w async for w in client.list_workflows(f'WorkflowId = "{workflow_id}"')]
    found.sort(key=lambda w: w.start_time)
    return [client.get_workflow_handle(workflow_id, run_id=w.run_id) for w in found]


async def carried_inputs(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    """The input each run after the first started with: what the run before carried over."""
    inputs = []
    for handle in (await runs_of(client, workflow_id))[1:]:
        history = await handle.fetch_history()
        started = history.events[0]
        assert started.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
        payload = started.workflow_execution_started_event_attributes.input.payloads[0]
        data = json.loads(payload.data)
        # The gate writes its carried state compactly (model/gate_compact.py).
        inputs.append(expand(data) if is_compact(data) else data)
    return inputs


# --- the gate ------------------------------------------------------------------------------------


async def test_gate_continues_as_new_with_builds_in_flight(client: Client,
                                                          tmp_path: Path) -> None:
    """Builds run on while the queue continues as new (several times): no run waited for them,
    and every change still merges once, in order, reported once."""
    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 2")
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        changes = [dep.store.upload(name, files={f"f{i}": "x\n"}, subject=f"c{i}")
                   for i in range(5)]
        for change in changes:
            dep.store.vote(change.number, APPROVED, author="core")
            await enqueue_change(client, config, "gate", change.ref(), max_history_events=30)
        wid = f"gate/{name}"
        await settle(dep, wid, timeout=180)
        assert merged_order(dep, [c.number for c in changes]) == [c.number for c in changes]
        for change in changes:
            assert len([r for r in dep.reports(change.number)
                        if r["message"].startswith("Build succeeded")]) == 1
        carried = await carried_inputs(client, wid)
        assert len(carried) >= 3, f"only {len(carried)} continue-as-new boundaries"
        # At least one boundary was crossed while builds ran: the run before did not wait.
        in_flight = [[k for k in inp.get("work", {}) if k.startswith("build/")]
                     for inp in carried]
        assert any(in_flight), f"no run continued as new with a build in flight: {in_flight}"
        # Its runs keep the long task timeout (a whole busy run's replay takes more than 10 s).
        described = await client.get_workflow_handle(wid).describe()
        timeout = described.raw_description.execution_config.default_workflow_task_timeout
        assert timeout.ToTimedelta() == GATE_TASK_TIMEOUT


@contextlib.contextmanager
def review_down(driver: LocalReviewDriver) -> Any:
    """The review system refuses every submit (as Gerrit does while it is down) until the
    block's `up()` is called."""
    real = driver.submit
    state = {"down": True, "refused": 0}

    async def submit(change: Any) -> None:
        if state["down"]:
            state["refused"] += 1
            raise ConnectionError("review.example.org: connection refused")
        await real(change)

    driver.submit = submit  # type: ignore[method-assign]
    try:
        yield state
    finally:
        driver.submit = real  # type: ignore[method-assign]


async def test_submit_failing_for_long_shows_stuck_then_merges_once(
        client: Client, tmp_path: Path) -> None:
    """A submit that keeps failing is not dropped and does not wedge silently: the queue shows it
    stuck (what, since when, why), keeps testing the item behind, and once the review system is
    back merges each change exactly once."""
    name = unique_project()
    config = gate_config(tmp_path, [name], "true")
    async with deployment(client, config) as dep:
        driver = dep.drivers["local"]
        assert isinstance(driver, LocalReviewDriver)
        dep.store.create_project(name, {"README": "x\n"})
        a = dep.store.upload(name, files={"a": "a\n"}, subject="a")
        b = dep.store.upload(name, files={"b": "b\n"}, subject="b")
        wid = f"gate/{name}"
        with review_down(driver) as review:
            for change in (a, b):
                dep.store.vote(change.number, APPROVED, author="core")
                await enqueue_change(client, config, "gate", change.ref(), review_round=1.0,
                                     max_history_events=60)
            stuck = await wait_status(dep, wid, lambda s: bool(s.stuck), timeout=60)
            [what] = stuck.stuck
            assert f"report and submit {a.number},1" in what.what
            assert "connection refused" in (what.error or "") and what.failures >= 1
            # The item behind is tested meanwhile (it cannot merge before A).
            await wait_status(dep, wid, lambda s: len(s.items) == 2 and all(
                j.state == "SUCCESS" for j in s.items[1].jobs), timeout=60)
            assert review["refused"] >= 2
            assert merged_order(dep, [a.number, b.number]) == []
            review["down"] = False
            status = await settle(dep, wid, timeout=120)
        assert status.stuck == []
        assert merged_order(dep, [a.number, b.number]) == [a.number, b.number]
        for change in (a, b):
            successes = [r for r in dep.reports(change.number)
                         if r["message"].startswith("Build succeeded")]
            assert len(successes) == 1, dep.reports(change.number)


# --- a node pool ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def pool_running(client: Client, config: Any, max_history_events: int
                       ) -> AsyncIterator[NodePools]:
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(
            orchestrator_worker(client, config, review_drivers(config)))
        await stack.enter_async_context(launcher_worker(client, config))
        await ensure_pools(client, config, max_history_events=max_history_events)
        yield NodePools(client, config)


async def test_pool_hands_out_nodes_while_a_slow_launch_crosses_boundaries(
        client: Client, cloud_config: CloudConfig, fake_openstack: FakeOpenStack,
        sshd_server: SSHServer, tmp_path: Path) -> None:
    """One server takes long to boot; meanwhile the pool continues as new several times and
    keeps launching and handing out nodes to the requests after it."""
    # The slow server stays in BUILD until the test ends it: neither limit may end its launch
    # first, however long the others take on a busy machine (the default launch-timeout, 20 s,
    # did on a loaded one: it was launched again, booted at once and served early).
    config = pool_config(tmp_path, cloud_config, sshd_server, max_servers=4,
                         **{"boot-timeout": 600, "launch-timeout": 600})
    async with pool_running(client, config, max_history_events=30) as ops:
        source = PooledNodes(client, config, config.state_path)
        fake_openstack.slow_boot_next(500.0)  # until the test ends it
        slow = asyncio.create_task(source.acquire_nodeset(["small"], "slow"))
        await until(lambda: _building(ops), what="the slow launch")
        # Its server exists (the slow boot is the next server created): the launches for the
        # requests after it must not race it to the cloud.
        await until(lambda: _created(fake_openstack), what="the slow server")
        served = 0
        for i in range(4):
            nodeset = await asyncio.wait_for(source.acquire_nodeset(["small"], f"r{i}"), 90)
            served += 1
            await source.release_nodeset(nodeset)
        assert not slow.done(), "the slow launch ended before the others were served"
        [pool_id] = [ops.handle(spec).id for spec in ops.specs]
        assert len(await runs_of(client, pool_id)) >= 4, "fewer than 3 continue-as-new"
        fake_openstack.finish_boots()
        nodeset = await asyncio.wait_for(slow, 90)
        await source.release_nodeset(nodeset)
        assert served == 4
        carried = await carried_inputs(client, pool_id)
        assert any(any(k.startswith("launch/") for k in inp.get("work", {}))
                   for inp in carried), "no run continued as new with a launch in flight"


async def _created(cloud: FakeOpenStack) -> bool:
    return len(cloud.servers) >= 1


async def _building(ops: NodePools) -> bool:
    return any(n.state is NodeState.BUILDING for n in (await pool_status(ops)).nodes)


# --- a TE broker with a host that is down ---------------------------------------------------------


class Hosts:
    """The TE hosts' workers: tehost1's libvirt does not answer until `up` is set (the
    time-skipping server cannot skip time while a task waits for a worker that never comes,
    so the host's worker is there and fails, as it does when libvirt is unreachable)."""

    def __init__(self) -> None:
        self.resets: list[str] = []
        self.down = {"tehost1"}

    @activity.defn(name="te_authorize")
    async def authorize(self, request: TEAuthorize) -> TEHostResult:
        return TEHostResult(ok=True)

    @activity.defn(name="te_reset")
    async def reset(self, request: TEReset) -> TEHostResult:
        if request.te.host in self.down:
            raise ConnectionError(f"{request.te.host}: cannot connect to libvirt")
        self.resets.append(request.te.key)
        return TEHostResult(ok=True)


async def test_broker_expires_leases_on_time_while_a_host_is_down(client: Client,
                                                                  tmp_path: Path) -> None:
    """tehost1 is down (its reset keeps failing): its TE shows stuck, and nothing else waits
    for it. Lease after lease on tehost0 is granted, then expires at its TTL, across several
    continue-as-new boundaries; when tehost1 comes back its TE is reset, by itself, once.
    (Real time, short TTLs: the time-skipping server does not skip while a host's reset is
    being retried.)"""
    config = te_config(tmp_path, hosts=2, per_host=1, ttl=3)
    prefix = config.temporal.task_queue_prefix
    up = Hosts()
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(
            orchestrator_worker(client, config, review_drivers(config)))
        for host in ("tehost0", "tehost1"):
            await stack.enter_async_context(Worker(
                client, task_queue=te_host_queue(prefix, host),
                activities=[up.authorize, up.reset]))
        [wid] = await ensure_brokers(client, config, max_history_events=25, reset_retry_max=1.0)
        ops = TEBrokers(client, config)
        status = await _broker_until(ops, lambda s: bool(s.stuck), "tehost1's reset stuck")
        assert [w.what for w in status.stuck] == ["reset tehost1/te2 after generation 0"]
        assert "cannot connect to libvirt" in (status.stuck[0].error or "")
        await _available(ops, "tehost0/te1")
        for i in range(4):
            silent = holder(client, config, f"silent{i}")
            lease = await silent.acquire(timeout=30)
            assert lease.te is not None and lease.te.key == "tehost0/te1"
            assert silent._renewer is not None
            silent._renewer.cancel()  # the holder goes quiet
            handle = client.get_workflow_handle(wid)
            for _ in range(600):
                ended = await handle.query("lease_status", LeaseRef(id=f"silent{i}"),
                                           result_type=LeaseStatus)
                if ended.state is LeaseState.ENDED:
                    break
                await asyncio.sleep(0.05)
            assert ended.state is LeaseState.ENDED and "expired" in (ended.reason or ""), \
                f"lease {i} never expired: {ended}"
            await _available(ops, "tehost0/te1")
        assert len(await runs_of(client, wid)) >= 4, "the broker stopped continuing as new"
        [status] = await ops.status()
        assert status.stuck and status.stuck[0].failures >= 2
        assert {t.key: t.state for t in status.tes}["tehost1/te2"] is TEState.RESETTING
        carried = await carried_inputs(client, wid)
        assert all(any(k.startswith("reset/tehost1/") for k in inp.get("work", {}))
                   for inp in carried), "a run waited for the reset of the host that is down"
        # tehost1 comes back: its reset goes through on the next round, by itself.
        up.down.clear()
        await _available(ops, "tehost1/te2")
        [status] = await ops.status()
        assert status.stuck == [] and up.resets.count("tehost1/te2") == 1


async def _broker_until(ops: TEBrokers, ok: Any, what: str) -> Any:
    for _ in range(400):
        [status] = await ops.status()
        if ok(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}: {status}")


async def _available(ops: TEBrokers, te: str) -> None:
    for _ in range(200):
        [status] = await ops.status()
        if any(t.key == te and t.state is TEState.AVAILABLE for t in status.tes):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{te} never became available: {status}")
