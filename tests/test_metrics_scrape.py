"""A real Prometheus scrapes a running `lockmaster worker all`: lockmaster's metrics (a build
counted, the node pool's state read at scrape time) and the Temporal SDK's reach Prometheus's
query API, and Prometheus loads deploy/prometheus/alerts.yml."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from lockmaster.metrics.dashboards import exprs, generate
from lockmaster.model.change import ReviewEvent
from lockmaster.model.check import CheckOutcome
from lockmaster.review.local import LocalReviewStore
from lockmaster.review.registry import review_drivers
from lockmaster.starters.router import EventRouter
from tests.deployment import make_config, unique_project
from tests.ports import free_port
from tests.test_metrics_deploy import ALERTS, metric_names, rule_exprs

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="Debian's prometheus is not installed (scripts/setup --test)")


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


async def wait_for(what: str, probe: Any, timeout: float = 60.0) -> Any:
    """Poll `probe()` (blocking, run in a thread) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            found = await asyncio.to_thread(probe)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc  # not up yet
        else:
            if found:
                return found
            last = found
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    answer = json.loads(get(url))
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


async def test_prometheus_scrapes_a_running_worker(
    temporal_env: WorkflowEnvironment, client: Client, tmp_path: Path
) -> None:
    name = unique_project()
    prefix = f"m-{uuid.uuid4().hex[:8]}-"
    config = make_config(
        tmp_path, prefix=prefix.rstrip("-"),
        projects=[{"name": name, "connection": "local",
                   "pipelines": {"check": {"jobs": ["hello"]}}}],
        jobs=[{"name": "hello", "run": "echo hello", "nodeset": "local"}],
    )
    metrics_port = free_port()
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["temporal"]["address"] = temporal_env.client.service_client.config.target_host
    data["temporal"]["workflow-id-prefix"] = prefix
    data["metrics"] = {"listen": "127.0.0.1", "port": metrics_port, "cache-seconds": 1}
    config_file = tmp_path / "lockmaster.yaml"
    config_file.write_text(yaml.safe_dump(data))
    from lockmaster.config.loader import load_config

    config = load_config(config_file)

    prom_port = free_port()
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    shutil.copy(ALERTS, prom_dir / "alerts.yml")
    (prom_dir / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [{"job_name": "lockmaster",
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }))
    lockmaster = Path(sys.executable).parent / "lockmaster"
    worker_log = tmp_path / "worker.log"
    prom_log = tmp_path / "prometheus.log"
    worker = subprocess.Popen([lockmaster, "worker", "all", "--config", str(config_file)],
                              stdout=worker_log.open("wb"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={prom_dir / 'prometheus.yml'}",
         f"--storage.tsdb.path={prom_dir / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=prom_log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    prometheus = f"http://127.0.0.1:{prom_port}"
    endpoint = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        text = (await wait_for("the worker's /metrics", lambda: get(endpoint), 60)).decode()
        assert "# TYPE lockmaster_builds_total counter" in text, text[:2000]

        # A check runs on the worker: its build is counted where it ran.
        store = LocalReviewStore(config.local_review_path("local"), "local")
        await asyncio.to_thread(store.create_project, name, {"README": "hi\n"})
        info = await asyncio.to_thread(store.upload, name, files={"a": "a\n"}, subject="A")
        router = EventRouter(config, client, review_drivers(config))
        actions = await router.route(ReviewEvent(
            type="patchset-created", connection=info.connection, project=info.project,
            branch=info.branch, change=info.number, patchset=info.patchset,
            commit=info.commit, change_id=info.change_id, url=info.url))
        wid = next(a.workflow_id for a in actions if a.workflow_id)
        outcome = await asyncio.wait_for(
            client.get_workflow_handle(wid, result_type=CheckOutcome).result(), 120)
        assert outcome.result == "SUCCESS", worker_log.read_text()[-3000:]

        def built() -> list[dict[str, Any]]:
            return query(prometheus, 'lockmaster_builds_total{job_name="hello"}')

        builds = await wait_for("lockmaster_builds_total in Prometheus", built, 60)
        assert builds[0]["metric"]["pipeline"] == "check"
        assert builds[0]["metric"]["result"] == "SUCCESS"
        assert float(builds[0]["value"][1]) == 1.0
        # The pool's state, read from its workflow when Prometheus scraped.
        provider = config.nodes.providers[0].name
        nodes = await wait_for("lockmaster_nodes", lambda: query(
            prometheus, f'lockmaster_nodes{{provider="{provider}"}}'), 30)
        assert {n["metric"]["state"] for n in nodes} >= {"ready", "in-use", "building"}
        # The Temporal SDK's own metrics, through the same endpoint.
        sdk = await wait_for("temporal_request_total", lambda: query(
            prometheus, "sum(temporal_request_total)"), 30)
        assert float(sdk[0]["value"][1]) > 0
        latency = await wait_for("workflow task schedule-to-start", lambda: query(
            prometheus, "temporal_workflow_task_schedule_to_start_latency_count"), 30)
        assert sum(float(r["value"][1]) for r in latency) > 0
        up = query(prometheus, 'up{job="lockmaster"}')
        assert [float(r["value"][1]) for r in up] == [1.0]

        # Every name the rules and dashboards use that this worker exports now is in
        # Prometheus (the rest are histograms/counters of other roles or no event yet).
        exported = {line.split("{")[0].split(" ")[0] for line in
                    (await asyncio.to_thread(get, endpoint)).decode().splitlines()
                    if line and not line.startswith("#")}
        used = {n for e in rule_exprs() + [x for d in generate(config).values()
                                           for x in exprs(d)] for n in metric_names(e)}
        sdk_used = {n for n in used if n.startswith("temporal_")}
        assert sdk_used, "the rules and dashboards use the SDK's metrics"
        missing = {n for n in sdk_used if n not in exported
                   and not n.startswith("temporal_request_failure")}
        assert not missing, f"SDK metrics used but not exported by a worker: {missing}"

        rules = json.loads(get(f"{prometheus}/api/v1/rules"))["data"]["groups"]
        loaded = {r["name"]: r["health"] for g in rules for r in g["rules"]}
        assert "LockmasterGateStalled" in loaded and "LockmasterWorkerDown" in loaded
        assert set(loaded.values()) <= {"ok", "unknown"}, loaded
    finally:
        for process in (worker, prom):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in (worker, prom):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
