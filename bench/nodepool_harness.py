"""The node pool benchmark's harness (bench/nodepool_latency.py): the instrumented launcher and
client (subclasses: production code is unchanged), the fake cloud and pool it runs, and the
helpers that read the pool's state and history."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from lockmaster.activities.launcher import LauncherActivities
from lockmaster.clouds.openstack import CloudServer, OpenStackCloud
from lockmaster.config.models import LockmasterConfig
from lockmaster.model.nodes import (
    DeleteServerRequest,
    DeleteServerResult,
    LaunchRequest,
    LaunchResult,
    NodeRequest,
    NodeRequestStatus,
    NodeState,
    PoolSpec,
    PoolStatus,
)
from lockmaster.model.nodes import Node as PoolNode
from lockmaster.nodepool.specs import AUTOHOLD_ID
from lockmaster.nodes.base import Node
from lockmaster.nodes.pooled import PooledNodes
from lockmaster.review.registry import review_drivers
from lockmaster.starters.nodepool import NodePools, ensure_pools
from lockmaster.workers.launcher import launcher_worker
from lockmaster.workers.orchestrator import orchestrator_worker
from tests.deployment import make_config
from tests.fakes.openstack_cloud import FakeOpenStack
from tests.fixtures.keystone import REGION
from tests.fixtures.openstack import CLOUD_NAME
from tests.fixtures.sshd import SSHServer

LABEL = "small"


# --- instrumentation (subclasses: production code is unchanged) ---------------------------------

class TimedLauncher(LauncherActivities):
    """The real launch and delete activities, recording when each step of a launch ended."""

    def __init__(self) -> None:
        super().__init__()
        self.launches: dict[str, dict[str, float]] = {}  # node id -> step -> time.time()
        self.deletes: list[float] = []  # durations

    async def _launch(self, request: LaunchRequest) -> LaunchResult:
        marks = self.launches.setdefault(request.node.id, {})
        marks["start"] = time.time()
        result = await super()._launch(request)
        marks["done"] = time.time()
        marks["ok"] = float(result.ok)
        return result

    async def _wait_active(self, cloud: OpenStackCloud, server: CloudServer, timeout: float
                           ) -> CloudServer:
        marks = self.launches.setdefault(server.metadata.get("lockmaster-node", "?"), {})
        marks["created"] = time.time()
        found = await super()._wait_active(cloud, server, timeout)
        marks["active"] = time.time()
        return found

    async def _delete(self, request: DeleteServerRequest) -> DeleteServerResult:
        started = time.monotonic()
        result = await super()._delete(request)
        self.deletes.append(time.monotonic() - started)
        return result


class TimedNodes(PooledNodes):
    """The executor's client, recording the update round trip, the wait and the SSH connect."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.marks: dict[str, dict[str, float]] = {}  # request id -> step -> time.time()

    async def _submit(self, handle: Any, request: NodeRequest) -> None:
        started = time.time()
        await super()._submit(handle, request)
        marks = self.marks.setdefault(request.id, {})
        marks.setdefault("submit", time.time() - started)  # the first one
        marks["submits"] = marks.get("submits", 0) + 1

    async def _ask(self, spec: PoolSpec, request: NodeRequest) -> NodeRequestStatus:
        marks = self.marks.setdefault(request.id, {})
        marks["asked"] = time.time()
        status = await super()._ask(spec, request)
        marks["answered"] = time.time()
        return status

    async def _connect(self, spec: PoolSpec, node: PoolNode, workspace: str) -> Node:
        started = time.time()
        connected = await super()._connect(spec, node, workspace)
        self.marks.setdefault(workspace, {})["connect"] = time.time() - started
        return connected


# --- helpers -------------------------------------------------------------------------------------

# What the dev server and the Temporal client log when the pool workflow is busy.
NOISE = {
    "updates_aborted_by_server": "workflow update was aborted",
    "updates_refused_in_flight_limit": "in-flight updates has been reached",
    "queries_refused_buffer_full": "consistent query buffer is full",
    "client_retry_warnings": "temporalio_client::retry",
    "worker_nondeterminism_errors": "Nondeterminism error",
    "workflow_tasks_not_found": "Task not found when completing",
}


class OutputLog:
    """File descriptors 1 and 2 (this process's, and so the dev server's and the Temporal core's
    logs) go to a file while the bench runs; `say` still reaches the terminal, and `counts` says
    how often each NOISE message appeared."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.saved: list[int] = []
        self.out: Any = None

    def __enter__(self) -> OutputLog:
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = [os.dup(1), os.dup(2)]
        self.out = os.fdopen(os.dup(self.saved[0]), "w")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for target, saved in zip((1, 2), self.saved, strict=True):
            os.dup2(saved, target)
            os.close(saved)
        self.saved = []
        if self.out is not None:
            self.out.close()

    def say(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def counts(self, since: int) -> dict[str, int]:
        with self.path.open("rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        return {name: text.count(needle) for name, needle in NOISE.items()}


QUERIES: Counter[str] = Counter()  # queries this process sent, by name


def count_queries() -> None:
    """Count every workflow query this process sends (the executor's client's status queries,
    the bench's own `status`), by name."""
    original = WorkflowHandle.query

    async def query(self: WorkflowHandle, query: Any, *args: Any, **kwargs: Any) -> Any:
        QUERIES[query if isinstance(query, str) else getattr(query, "__name__", "?")] += 1
        return await original(self, query, *args, **kwargs)

    WorkflowHandle.query = query  # type: ignore[method-assign]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def dist(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"p50": round(statistics.median(values), 3), "p95": round(percentile(values, 0.95), 3),
            "max": round(max(values), 3)}


def bench_config(tmp: Path, clouds_file: Path, sshd: SSHServer, *, min_ready: int,
                 max_servers: int) -> LockmasterConfig:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    config = make_config(tmp / prefix, projects=[], jobs=[], prefix=prefix, providers=[{
        "name": "cloud", "driver": "openstack", "cloud": CLOUD_NAME, "region": REGION,
        "clouds-file": str(clouds_file), "key-file": str(sshd.client_key),
        "launch-timeout": 60, "boot-timeout": 30, "launch-attempts": 3,
        "pools": [{"name": "main", "max-servers": max_servers, "networks": ["private"],
                   "labels": [{"name": LABEL, "image": "debian-12", "flavor": "m1.small",
                               "key-name": "lockmaster", "username": sshd.user,
                               "connection-port": sshd.port}]}],
    }])
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["temporal"]["workflow-id-prefix"] = f"{prefix}/"
    data["nodes"]["labels"] = [{"name": LABEL, "min-ready": min_ready}]
    return LockmasterConfig.model_validate(data)


async def until(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


async def pool_status(ops: NodePools) -> PoolStatus:
    [status] = await ops.status()
    return status


def ready_count(status: PoolStatus) -> int:
    return sum(n.state is NodeState.READY and n.request_id is None for n in status.nodes)


@contextlib.asynccontextmanager
async def running_pool(client: Client, config: LockmasterConfig, fake: FakeOpenStack,
                       launcher: TimedLauncher) -> AsyncIterator[NodePools]:
    """Orchestrator and launcher workers and the pool; on the way out the pool is disabled (its
    idle nodes deleted), every server is waited for, and the workflows are terminated."""
    async with orchestrator_worker(client, config, review_drivers(config)), \
            launcher_worker(client, config, launcher):
        await ensure_pools(client, config)
        ops = NodePools(client, config)
        try:
            yield ops
        finally:
            with contextlib.suppress(Exception):
                await ops.set_enabled("cloud", False, "benchmark done")
                # Nodes still held by requests that failed wait for their lease: not for long.
                await until(lambda: not fake.live_servers(), 30, "every server deleted", 0.2)
            for wid in [ops.handle(s).id for s in ops.specs] + [ops.prefix + AUTOHOLD_ID]:
                with contextlib.suppress(Exception):
                    await client.get_workflow_handle(wid).terminate("benchmark done")
            fake.reset()


def reset_cloud(fake: FakeOpenStack, boot_delay: float) -> None:
    fake.reset()
    fake.boot_delay = boot_delay
    fake.set_limits(instances=1000, cores=10000, ram=10**8)


async def pool_history(client: Client, workflow_id: str) -> dict[str, dict[str, float]]:
    """node id -> when the pool's workflow task after its launch's completion finished (the
    request is fulfilled in that task), from the pool's history."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled: dict[int, str] = {}
    pending: list[str] = []
    found: dict[str, dict[str, float]] = {}
    for event in history.events:
        at = event.event_time.ToDatetime(tzinfo=UTC).timestamp()
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == "launch_node":
                payload = json.loads(attrs.input.payloads[0].data)
                scheduled[event.event_id] = payload["node"]["id"]
                found.setdefault(payload["node"]["id"], {})["scheduled"] = at
        elif event.HasField("activity_task_completed_event_attributes"):
            node_id = scheduled.get(
                event.activity_task_completed_event_attributes.scheduled_event_id)
            if node_id is not None:
                found[node_id]["completed"] = at
                pending.append(node_id)
        elif event.HasField("workflow_task_completed_event_attributes"):
            for node_id in pending:
                found[node_id]["fulfilled"] = at
            pending = []
    return found


# --- the measurements ----------------------------------------------------------------------------
