"""`lockmaster gerrit listen --metrics-port`: the listener process serves /metrics with the
events it routed and their intake lag (from Gerrit's eventCreatedOn), over real SSH
stream-events of the fake Gerrit."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families
from temporalio.testing import WorkflowEnvironment

from tests.deployment import unique_project
from tests.fakes.gerrit import FakeGerrit
from tests.gitrepos import ReviewSite
from tests.ports import free_port
from tests.test_check_gerrit import add_change, gerrit_config


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_the_listener_serves_events_and_their_intake_lag(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    project = unique_project()
    site = ReviewSite(tmp_path / "git")
    site.create_project(project)
    async with FakeGerrit() as fake:
        config = gerrit_config(tmp_path, fake, site, project, "true")
        add_change(fake, site, project, 1)
        data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
        data["temporal"]["address"] = temporal_env.client.service_client.config.target_host
        config_file = tmp_path / "lockmaster.yaml"
        config_file.write_text(yaml.safe_dump(data))
        port = free_port()
        log = tmp_path / "listener.log"
        lockmaster = Path(sys.executable).parent / "lockmaster"
        listener = subprocess.Popen(
            [lockmaster, "gerrit", "listen", "--connection", "gerrit", "--metrics-port",
             str(port), "--config", str(config_file)],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            deadline = time.monotonic() + 60
            while "streaming events" not in log.read_text():  # connected to stream-events
                assert time.monotonic() < deadline, log.read_text()
                assert listener.poll() is None, log.read_text()
                await asyncio.sleep(0.2)
            event = fake.patchset_created_event(1)
            event["eventCreatedOn"] = int(time.time()) - 120  # made two minutes ago
            await fake.emit(event)
            key = ("lockmaster_events_total", frozenset({("event", "patchset-created")}))
            found: dict = {}
            while time.monotonic() < deadline and not found.get(key):
                await asyncio.sleep(0.3)
                found = await asyncio.to_thread(scrape, url)
            assert found.get(key) == 1.0, log.read_text()
            lag = {dict(labels).get("le"): v for (name, labels), v in found.items()
                   if name == "lockmaster_event_intake_lag_seconds_bucket"}
            assert lag["60.0"] == 0 and lag["300.0"] == 1, lag
            assert any(name == "temporal_request_total" for name, _ in found)
        finally:
            os.killpg(listener.pid, signal.SIGTERM)
            try:
                # `gerrit listen` closes its stream at once but (before this test too) its
                # process lingers after SIGTERM; it has nothing left to lose.
                listener.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(listener.pid, signal.SIGKILL)
                listener.wait()
