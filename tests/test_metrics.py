"""lockmaster/metrics: domain metrics on fresh registries, the Temporal SDK bridge fed with
fabricated updates, the workflows' state turned into gauges and departures (pure), the
metrics server's port taken (a warning), and /metrics of the web service over a real gate."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from lockmaster import metrics
from lockmaster.activities.launcher import LauncherActivities
from lockmaster.clouds.openstack import CloudQuotaError
from lockmaster.config.models import LockmasterConfig
from lockmaster.metrics import domain as domain_module
from lockmaster.metrics import server
from lockmaster.metrics.collector import STALE_AFTER, WorkflowStateCollector
from lockmaster.metrics.domain import BOUNDED_LABELS, STATE_GAUGES, DomainMetrics, _Maker
from lockmaster.metrics.server import start_worker_metrics
from lockmaster.metrics.temporal_sdk import BUCKETS, COUNTER, GAUGE, HISTOGRAM, SDKMetrics
from lockmaster.metrics.workflow_state import Departures, RunningCheck, Snapshot, gauge_values
from lockmaster.model.change import ReviewEvent
from lockmaster.model.gate import ItemView
from lockmaster.model.gate import QueueStatus as GateStatus
from lockmaster.model.nodes import (
    Driver,
    LabelSpec,
    LaunchRequest,
    Node,
    NodeRequest,
    NodeState,
    PoolSpec,
    PoolStatus,
    RequestState,
)
from lockmaster.model.publish import QueueEntry, QueueState
from lockmaster.model.publish import QueueStatus as PublishQueueStatus
from lockmaster.model.testenv import BrokerStatus, Lease, TEState, TEView
from lockmaster.model.work import StuckView
from lockmaster.starters.router import EventRouter
from lockmaster.web.app import build_app
from lockmaster.web.context import WebContext
from tests.deployment import deployment, unique_project
from tests.test_gate_workflow import approve, gate_config


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


# --- domain metrics ---------------------------------------------------------------------------


def test_observations_land_in_their_series() -> None:
    registry = CollectorRegistry()
    dm = DomainMetrics(registry)
    dm.observe_build("gate", "tox-py311", "SUCCESS", 42.0)
    dm.observe_build("gate", "tox-py311", "SUCCESS", 7.0)
    dm.observe_build("check", "lint", "FAILURE", None)  # no duration: counted, not timed
    dm.observe_event("patchset-created", -3.0)  # a clock ahead of Gerrit's: lag 0
    dm.observe_launch("donor", "RegionOne", "main", "ok", 95.0)
    dm.observe_launch("donor", "RegionOne", "main", "quota", 2.0, "quota")
    dm.observe_mirror_sync("eu", "ok", 12.5)
    found = samples(registry)
    assert value(found, "lockmaster_builds_total", pipeline="gate", job_name="tox-py311",
                 result="SUCCESS") == 2
    assert value(found, "lockmaster_job_duration_seconds_sum", pipeline="gate",
                 job_name="tox-py311") == 49.0
    assert value(found, "lockmaster_job_duration_seconds_count", pipeline="check",
                 job_name="lint") is None
    assert value(found, "lockmaster_builds_total", pipeline="check", job_name="lint",
                 result="FAILURE") == 1
    assert value(found, "lockmaster_event_intake_lag_seconds_sum", event="patchset-created") == 0
    assert value(found, "lockmaster_node_launch_seconds_count", provider="donor",
                 region="RegionOne", pool="main") == 1
    assert value(found, "lockmaster_node_launch_errors_total", provider="donor",
                 region="RegionOne", pool="main", reason="quota") == 1
    assert value(found, "lockmaster_node_launches_total", provider="donor", region="RegionOne",
                 pool="main", result="quota") == 1
    assert value(found, "lockmaster_mirror_sync_seconds_bucket", mirror="eu", result="ok",
                 le="30.0") == 1


def test_every_label_is_bounded() -> None:
    registry = CollectorRegistry()
    DomainMetrics(registry)
    for family in registry.collect():
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= BOUNDED_LABELS, sample
    for name, _, labels in STATE_GAUGES.values():
        assert name.startswith("lockmaster_") and set(labels) <= BOUNDED_LABELS
    with pytest.raises(ValueError, match="change"):
        _Maker(registry).counter("per_change", "no", ("change",))


def test_observe_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    dm = DomainMetrics(CollectorRegistry())
    with caplog.at_level(logging.WARNING):
        metrics.observe(dm.observe_build, "gate")  # missing arguments: logged, not raised
    assert "not recorded" in caplog.text


def test_events_are_observed_only_in_processes_serving_metrics(
        monkeypatch: pytest.MonkeyPatch) -> None:
    dm = DomainMetrics(CollectorRegistry())
    monkeypatch.setattr(domain_module, "_domain", dm)
    monkeypatch.setattr(metrics, "enabled", False)
    metrics.observe_event("comment-added", time.time() - 5)
    assert value(samples(dm.registry), "lockmaster_events_total", event="comment-added") is None
    monkeypatch.setattr(metrics, "enabled", True)
    metrics.observe_event("comment-added", time.time() - 5)
    found = samples(dm.registry)
    assert value(found, "lockmaster_events_total", event="comment-added") == 1
    assert 4 < value(found, "lockmaster_event_intake_lag_seconds_sum",  # type: ignore[operator]
                     event="comment-added") < 60


async def test_the_router_observes_what_it_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    dm = DomainMetrics(CollectorRegistry())
    monkeypatch.setattr(domain_module, "_domain", dm)
    monkeypatch.setattr(metrics, "enabled", True)
    router = EventRouter(LockmasterConfig.model_validate({}), None, {})  # type: ignore[arg-type]
    event = ReviewEvent(type="patchset-created", connection="gerrit", project="p",
                        branch="master", change=1, patchset=1, created=time.time() - 30)
    actions = await router.route(event)
    assert actions[0].action == "ignored"  # an unknown connection: counted all the same
    found = samples(dm.registry)
    assert value(found, "lockmaster_events_total", event="patchset-created") == 1
    assert value(found, "lockmaster_event_intake_lag_seconds_bucket", event="patchset-created",
                 le="60.0") == 1
    assert value(found, "lockmaster_event_intake_lag_seconds_bucket", event="patchset-created",
                 le="10.0") == 0


class QuotaCloud:
    """A cloud that refuses every server for quota (what launch_node is given instead of
    openstacksdk's)."""

    async def create_server(self, spec: Any) -> Any:
        raise CloudQuotaError("Quota exceeded for instances: Requested 1, but already used 10")

    async def find_server(self, name: str) -> None:
        return None  # nothing was created


async def test_launch_errors_are_counted_per_provider_and_region(
        monkeypatch: pytest.MonkeyPatch) -> None:
    dm = DomainMetrics(CollectorRegistry())
    monkeypatch.setattr(domain_module, "_domain", dm)
    spec = PoolSpec(provider="donor", pool="main", driver=Driver.OPENSTACK, region="RegionTwo",
                    cloud="donor", labels={"jammy": LabelSpec(name="jammy", image="i",
                                                              flavor="f")})
    node = Node(id="0000000001", provider="donor", pool="main", driver=Driver.OPENSTACK,
                labels=["jammy"])
    launcher = LauncherActivities(lambda _: QuotaCloud())  # type: ignore[arg-type,return-value]
    result = await ActivityEnvironment().run(launcher.launch_node,
                                             LaunchRequest(spec=spec, node=node))
    assert not result.ok and result.quota
    found = samples(dm.registry)
    where = {"provider": "donor", "region": "RegionTwo", "pool": "main"}
    assert value(found, "lockmaster_node_launches_total", result="quota", **where) == 1
    assert value(found, "lockmaster_node_launch_errors_total", reason="quota", **where) == 1
    assert value(found, "lockmaster_node_launch_seconds_count", **where) is None


# --- the Temporal SDK's buffered metrics ------------------------------------------------------


@dataclass(frozen=True)
class FakeMetric:
    name: str
    kind: int
    description: str | None = None
    unit: str | None = None


@dataclass(frozen=True)
class FakeUpdate:
    metric: FakeMetric
    value: float
    attributes: dict[str, Any]


def test_sdk_updates_become_prometheus_series() -> None:
    requests = FakeMetric("temporal_request", COUNTER, "client requests")
    slots = FakeMetric("temporal_worker_task_slots_available", GAUGE)
    latency = FakeMetric("temporal_workflow_task_schedule_to_start_latency", HISTOGRAM)
    queue = {"task_queue": "orchestrator", "namespace": "default"}
    sdk = SDKMetrics()
    sdk.apply([FakeUpdate(requests, 2, {"operation": "Poll"}),
               FakeUpdate(requests, 3, {"operation": "Poll"}),
               FakeUpdate(slots, 100, queue), FakeUpdate(slots, 98, queue),
               FakeUpdate(latency, 0.02, queue), FakeUpdate(latency, 0.3, queue),
               FakeUpdate(latency, 500.0, queue)])  # above the last bucket: +Inf only
    registry = CollectorRegistry()
    registry.register(sdk)
    found = samples(registry)
    assert value(found, "temporal_request_total", operation="Poll") == 5
    assert value(found, "temporal_worker_task_slots_available", **queue) == 98
    assert value(found, "temporal_workflow_task_schedule_to_start_latency_bucket",
                 le="0.025", **queue) == 1
    assert value(found, "temporal_workflow_task_schedule_to_start_latency_bucket",
                 le="0.5", **queue) == 2
    assert value(found, "temporal_workflow_task_schedule_to_start_latency_bucket",
                 le=repr(float(BUCKETS[-1])), **queue) == 2
    assert value(found, "temporal_workflow_task_schedule_to_start_latency_bucket",
                 le="+Inf", **queue) == 3
    assert value(found, "temporal_workflow_task_schedule_to_start_latency_count", **queue) == 3


def test_a_scrape_drains_the_buffer() -> None:
    pending = [[FakeUpdate(FakeMetric("temporal_request", COUNTER), 1, {"operation": "X"})]]
    sdk = SDKMetrics(lambda: pending.pop() if pending else [])
    registry = CollectorRegistry()
    registry.register(sdk)
    assert value(samples(registry), "temporal_request_total", operation="X") == 1
    assert value(samples(registry), "temporal_request_total", operation="X") == 1  # not twice


# --- the workflows' state ---------------------------------------------------------------------


def item(change: str, enqueued: float, active: bool = True, failing: bool = False) -> ItemView:
    return ItemView(change=change, project="p", branch="master", active=active, failing=failing,
                    changes=change, merge="ok", enqueued_at=enqueued)


def test_gauges_from_a_snapshot() -> None:
    now = 10_000.0
    gate = GateStatus(queue="integrated", pipeline="gate", window=5, idle=False, busy=True,
                      items=[item("1,1", now - 300), item("2,1", now - 60, active=False,
                                                          failing=True)],
                      stuck=[StuckView(key="r", what="report", since=now - 9, failures=3)])
    pool = PoolStatus(
        provider="donor", pool="main", driver=Driver.OPENSTACK, enabled=True, max_servers=10,
        nodes=[Node(id=str(i), provider="donor", pool="main", driver=Driver.OPENSTACK,
                    labels=["jammy"], state=s) for i, s in enumerate(
                        [NodeState.READY, NodeState.IN_USE, NodeState.IN_USE])],
        requests=[NodeRequest(id="a", labels=["jammy"], arrived=now - 120),
                  NodeRequest(id="b", labels=["jammy"], arrived=now - 5,
                              state=RequestState.FULFILLED)],
        paused_until=now + 30)
    broker = BrokerStatus(
        label="ovb", draining_hosts=[],
        tes=[TEView(key=f"h/{i}", host="h", name=str(i), state=s, generation=1)
             for i, s in enumerate([TEState.LEASED, TEState.QUARANTINED])],
        waiting=[Lease(id="l", holder="b", public_key="k", ttl=60, precedence=0,
                       arrived=now - 45, expires=now + 60)])
    publish = PublishQueueStatus(repository="main", entries=[
        QueueEntry(workflow_id="w1", change="p 1,1", state=QueueState.READY),
        QueueEntry(workflow_id="w2", change="p 2,1", state=QueueState.READY)])
    snap = Snapshot(taken=now, gates=[gate], pools=[pool], brokers=[broker],
                    publish_queues=[publish], check_pipelines=["check"],
                    checks=[RunningCheck("check/p/3/1", "check", now - 20)])
    snap.unanswered["TEBrokerWorkflow"] = 1
    got = gauge_values(snap, {"donor": "RegionOne"})
    q = ("gate", "integrated")
    assert got["queue_items"][q] == 2 and got["queue_active"][q] == 1
    assert got["queue_failing"][q] == 1 and got["queue_oldest"][q] == 300
    assert got["queue_window"][q] == 5 and got["queue_busy"][q] == 1
    assert got["queue_stuck"][q] == 1
    assert got["queue_items"][("check", "check")] == 1
    assert got["queue_oldest"][("check", "check")] == 20
    where = ("donor", "RegionOne", "main")
    assert got["nodes"][(*where, "in-use")] == 2 and got["nodes"][(*where, "building")] == 0
    assert got["pool_max"][where] == 10 and got["pool_paused"][where] == 1
    assert got["node_requests"][(*where, "pending")] == 1
    assert got["request_oldest"][where] == 120
    assert got["te"][("ovb", "quarantined")] == 1 and got["te"][("ovb", "available")] == 0
    assert got["te_waiting"][("ovb",)] == 1 and got["te_oldest_wait"][("ovb",)] == 45
    assert got["publish_entries"][("main", "ready")] == 2
    assert got["unanswered"][("TEBrokerWorkflow",)] == 1


def test_departures_are_items_gone_from_a_queue_that_answered() -> None:
    gate = GateStatus(queue="q", pipeline="gate", window=5, idle=False,
                      items=[item("1,1", 100.0), item("2,1", 150.0)])
    departures = Departures()
    assert departures.update(Snapshot(taken=200.0, gates=[gate], checks=None)) == []
    # The queue did not answer this time: its items are not gone.
    assert departures.update(Snapshot(taken=260.0, gates=[], checks=None)) == []
    left = gate.model_copy(update={"items": [gate.items[1]]})
    assert departures.update(Snapshot(taken=300.0, gates=[left], checks=None)) == [
        ("gate", "q", 200.0)]
    assert departures.update(Snapshot(taken=400.0, gates=[left], checks=None)) == []


class UnreachableClient:
    def list_workflows(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Connection refused")


async def test_temporal_unreachable_is_counted_and_old_answers_are_not_served() -> None:
    dm = DomainMetrics(CollectorRegistry())
    config = LockmasterConfig.model_validate({"metrics": {"cache-seconds": 0}})
    collector = WorkflowStateCollector(UnreachableClient(), config, dm)  # type: ignore[arg-type]
    await collector.refresh_if_stale()
    assert value(samples(dm.registry), "lockmaster_workflow_state_errors_total") == 1
    assert list(collector.collect()) == []  # nothing known yet
    gate = GateStatus(queue="q", pipeline="gate", window=3, idle=True)
    collector._snapshot = Snapshot(taken=time.time() - 10, gates=[gate])
    names = {f.name for f in collector.collect() if f.samples}
    assert "lockmaster_queue_window" in names  # Temporal down for 10 s: the last answers
    collector._snapshot = Snapshot(taken=time.time() - STALE_AFTER - 1, gates=[gate])
    assert list(collector.collect()) == []  # down for over a minute: unknown, not old


# --- the servers ------------------------------------------------------------------------------


def test_a_metrics_port_taken_is_a_warning() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        config = LockmasterConfig.model_validate({"metrics": {"port": port}})
        said: list[str] = []
        assert start_worker_metrics(None, config, "executor", said.append) is None
    assert len(said) == 1 and f"127.0.0.1:{port}" in said[0] and "metrics.port" in said[0]
    off = LockmasterConfig.model_validate({})
    assert start_worker_metrics(None, off, "executor", said.append) is None  # unset: off
    assert len(said) == 1


async def test_web_metrics_show_a_running_gate(client: Client, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # The process's collector is made by the first caller; another test's run_workers in this
    # process may have made it for its own configuration.
    monkeypatch.setattr(server, "_state", None)
    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 5")
    config.metrics.cache_seconds = 0
    # Its own workflows only: another test's (a pool whose worker is gone) would make every
    # scrape wait for its query's timeout.
    config.temporal.workflow_id_prefix = f"{name.split('/')[0]}-"
    ctx = WebContext(config=config, state_dir=config.state_path, client=client, results=None)
    async with deployment(client, config) as dep, \
            TestClient(TestServer(build_app(ctx))) as http:
        dep.store.create_project(name, {"README": "x\n"})
        changes = [dep.store.upload(name, files={f: f + "\n"}, subject=f) for f in ("a", "b")]
        for change in changes:
            await approve(dep, change.number)

        async def scrape() -> dict:
            response = await http.get("/metrics")
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            return {(s.name, frozenset(s.labels.items())): s.value for family in
                    text_string_to_metric_families(await response.text())
                    for s in family.samples}

        async def until(check: Any, timeout: float = 60) -> dict:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                found = await scrape()
                if check(found):
                    return found
                await asyncio.sleep(0.3)
            raise AssertionError(f"not within {timeout} s: {found}")

        queue = {"pipeline": "gate", "queue": name}
        found = await until(lambda f: value(f, "lockmaster_queue_items", **queue) == 2)
        assert value(found, "lockmaster_queue_window", **queue) is not None
        # Both merge, and a later scrape sees them gone: two resident times observed.
        found = await until(lambda f: value(
            f, "lockmaster_queue_resident_seconds_count", **queue) == 2, 90)
        assert value(found, "lockmaster_queue_items", **queue) == 0
        assert value(found, "lockmaster_queue_resident_seconds_sum", **queue) > 0
