"""Collect-on-scrape: the long-lived workflows' state as gauges, read when Prometheus asks.

At a scrape the collector lists the running workflows, queries each gate queue, node pool,
TE broker and publish queue for its `status` (concurrently, each bounded by the configured
query timeout), and serves the answers as gauges (metrics/workflow_state.py). Answers are
reused for `metrics.cache-seconds`, so several Prometheus servers, or the web page and
Prometheus, do not multiply the queries. A workflow that does not answer is counted in
lockmaster_workflows_unanswered; Temporal unreachable counts in
lockmaster_workflow_state_errors_total and the last snapshot is served.

Only processes that run the orchestrator (`worker orchestrator`, `worker all`, `lockmaster run`)
or the web service register it: every process reporting the same queues would count them
once per process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from temporalio.client import Client

from lockmaster.config.models import LockmasterConfig, OpenStackProvider
from lockmaster.metrics.domain import DomainMetrics
from lockmaster.metrics.workflow_state import (
    Departures,
    RunningCheck,
    Snapshot,
    families,
    gauge_values,
)
from lockmaster.model.gate import QueueStatus as GateStatus
from lockmaster.model.gate import StatusQuery as GateStatusQuery
from lockmaster.model.nodes import PoolStatus, PoolStatusQuery
from lockmaster.model.publish import QueueStatus as PublishQueueStatus
from lockmaster.model.publish import QueueStatusQuery as PublishQueueQuery
from lockmaster.model.testenv import BrokerStatus, BrokerStatusQuery

log = logging.getLogger(__name__)

# A snapshot older than this is not served (Temporal unreachable for a minute): absent gauges
# say "unknown", where the last answers would keep alerts firing or silent on old numbers.
STALE_AFTER = 60.0

# Workflow type -> (query argument, answer type, where the snapshot keeps it).
QUERIES: dict[str, tuple[Any, type, str]] = {
    "GateQueueWorkflow": (GateStatusQuery(), GateStatus, "gates"),
    "NodePoolWorkflow": (PoolStatusQuery(), PoolStatus, "pools"),
    "TEBrokerWorkflow": (BrokerStatusQuery(), BrokerStatus, "brokers"),
    "PublishQueueWorkflow": (PublishQueueQuery(), PublishQueueStatus, "publish_queues"),
}


def regions(config: LockmasterConfig) -> dict[str, str]:
    return {p.name: (p.region or "") if isinstance(p, OpenStackProvider) else ""
            for p in config.nodes.providers}


async def take_snapshot(client: Client, config: LockmasterConfig, timeout: float) -> Snapshot:
    """Ask Temporal. Raises what the listing raises (Temporal unreachable); a workflow that
    does not answer its query is counted, not raised."""
    prefix = config.temporal.workflow_id_prefix
    independent = [p.name for p in config.pipelines if p.manager == "independent"]
    snap = Snapshot(taken=time.time(), check_pipelines=independent, checks=[])
    assert snap.checks is not None
    handles: list[tuple[str, str]] = []
    async for wf in client.list_workflows('ExecutionStatus = "Running"',
                                          rpc_timeout=timedelta(seconds=timeout)):
        if not wf.id.startswith(prefix):
            continue
        if wf.workflow_type == "CheckWorkflow":
            pipeline = wf.id[len(prefix):].split("/", 1)[0]
            snap.checks.append(RunningCheck(wf.id, pipeline, wf.start_time.timestamp()))
        elif wf.workflow_type in QUERIES:
            handles.append((wf.workflow_type, wf.id))
    unanswered: Counter[str] = Counter()

    async def one(kind: str, wid: str) -> None:
        argument, answer, where = QUERIES[kind]
        try:
            status = await asyncio.wait_for(client.get_workflow_handle(wid).query(
                "status", argument, result_type=answer,
                rpc_timeout=timedelta(seconds=timeout)), timeout)
        except Exception as exc:  # its worker may be down: counted, and the rest is served
            log.debug("metrics: %s did not answer: %s", wid, exc)
            unanswered[kind] += 1
            return
        getattr(snap, where).append(status)

    await asyncio.gather(*(one(kind, wid) for kind, wid in handles))
    for kind in QUERIES:
        unanswered.setdefault(kind, 0)
    snap.unanswered = unanswered
    return snap


class WorkflowStateCollector(Collector):
    """Registered on the process registry; `collect` runs in whatever thread serves the
    scrape. The Temporal client belongs to the event loop it was made in: a scrape from
    another thread (the standalone metrics server) runs the refresh on that loop and waits
    for it; a scrape from the loop itself (the web service) awaits `refresh_if_stale()`
    first and then renders in a thread."""

    def __init__(self, client: Client, config: LockmasterConfig, metrics: DomainMetrics,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.client = client
        self.config = config
        self.metrics = metrics
        self.loop = loop or asyncio.get_running_loop()
        self.cache_seconds = config.metrics.cache_seconds
        self.timeout = config.metrics.query_timeout
        self.regions = regions(config)
        self._snapshot: Snapshot | None = None
        self._departures = Departures()
        self._refreshing: asyncio.Future[None] | None = None
        self._lock = threading.Lock()

    def reconfigure(self, config: LockmasterConfig) -> None:
        """A reloaded configuration (SIGHUP): pipelines, regions and the metrics settings."""
        self.config = config
        self.cache_seconds = config.metrics.cache_seconds
        self.timeout = config.metrics.query_timeout
        self.regions = regions(config)

    def _fresh(self) -> bool:
        snap = self._snapshot
        return snap is not None and time.time() - snap.taken < self.cache_seconds

    async def refresh_if_stale(self) -> None:
        if self._fresh():
            return
        if self._refreshing is None or self._refreshing.done():
            # One refresh at a time: concurrent scrapes wait for the same answers.
            self._refreshing = asyncio.ensure_future(self._refresh())
        await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        try:
            snap = await take_snapshot(self.client, self.config, self.timeout)
        except Exception as exc:
            self.metrics.state_errors.inc()
            log.warning("metrics: cannot list the workflows: %s", exc)
            return
        for pipeline, queue, seconds in self._departures.update(snap):
            log.debug("metrics: an item left %s/%s after %.1f s", pipeline, queue, seconds)
            self.metrics.resident.labels(pipeline, queue).observe(seconds)
        for gate in snap.gates:  # so "no departures for an hour" has a zero to compare
            self.metrics.resident.labels(gate.pipeline, gate.queue)
        with self._lock:
            self._snapshot = snap

    def _refresh_from_thread(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop or self.loop.is_closed():
            return  # on the loop itself: serve what is cached (never block the loop)
        future = asyncio.run_coroutine_threadsafe(self.refresh_if_stale(), self.loop)
        try:
            future.result(timeout=self.timeout + 5)
        except Exception as exc:
            log.warning("metrics: the workflows' state was not refreshed: %s", exc)

    def collect(self) -> Iterator[Metric]:
        if not self._fresh():
            self._refresh_from_thread()
        with self._lock:
            snap = self._snapshot
        if snap is None or time.time() - snap.taken > max(STALE_AFTER, self.cache_seconds):
            return
        yield from families(gauge_values(snap, self.regions))

    def describe(self) -> Iterator[Metric]:
        return iter(())
