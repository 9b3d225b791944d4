"""Crash safety: kill the worker and restart the Temporal dev server (SQLite) in the middle of a
busy queue; the queue finishes with the same merges and exactly one report per outcome."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lockmaster.model.gate import QueueStatus, StatusQuery
from lockmaster.review.registry import review_drivers
from lockmaster.starters.router import EventRouter
from lockmaster.temporal.client import connect
from lockmaster.temporal.devserver import DevServer
from tests.deployment import make_config, unique_project
from tests.ports import restartable_port
from tests.test_gate_workflow import CHECK, GATE

pytestmark = pytest.mark.slow


def start_worker(config_file: Path, log: Path) -> subprocess.Popen[bytes]:
    lockmaster = Path(sys.executable).parent / "lockmaster"
    return subprocess.Popen([lockmaster, "worker", "all", "--config", str(config_file)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


async def test_worker_killed_and_server_restarted_mid_queue(tmp_path: Path) -> None:
    name = unique_project()
    port = restartable_port()
    server = DevServer(tmp_path / "temporal.db", port=port, ui_port=restartable_port())
    await server.start()
    config = make_config(
        tmp_path, pipelines=[CHECK, GATE],
        projects=[{"name": name, "connection": "local", "pipelines": {"gate": {"jobs": [
            "merge-check", {"name": "test", "dependencies": ["merge-check"]}]}}}],
        jobs=[{"name": "merge-check", "run": "sleep 1", "nodeset": "local"},
              {"name": "test", "run": "sleep 2; test ! -f BROKEN", "nodeset": "local"}],
    )
    config.temporal.address = f"127.0.0.1:{port}"
    config_file = tmp_path / "lockmaster.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(by_alias=True, mode="json",
                                                            exclude_none=True)))
    log = tmp_path / "worker.log"
    worker = start_worker(config_file, log)
    try:
        client = await connect(config)
        drivers = review_drivers(config)
        router = EventRouter(config, client, drivers, build_heartbeat_timeout=3)
        store = drivers["local"].store  # type: ignore[attr-defined]
        store.create_project(name, {"README": "x\n"})
        changes = [store.upload(name, files={"BROKEN" if i == 1 else f"f{i}": "x\n"},
                                subject=f"c{i}") for i in range(4)]
        for change in changes:
            info = store.vote(change.number, {"Code-Review": 2, "Workflow": 1}, author="core")
            from lockmaster.model.change import ReviewEvent

            await router.route(ReviewEvent(
                type="comment-added", connection="local", project=name, branch="master",
                change=info.number, patchset=info.patchset, comment="Workflow+1",
                approvals={"Workflow": 1}))
        wid = f"gate/{name}"

        async def status() -> QueueStatus:
            c = await connect(config)
            return await c.get_workflow_handle(wid).query("status", StatusQuery(),
                                                          result_type=QueueStatus)

        for _ in range(300):  # builds are running for every item
            s = await status()
            if len(s.items) == 4 and all(any(j.state == "running" for j in i.jobs)
                                         for i in s.items):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(log.read_text())
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        await server.stop()
        await server.start()
        worker = start_worker(config_file, log)
        for _ in range(1200):
            try:
                s = await status()
            except Exception:  # the server is coming back
                await asyncio.sleep(0.2)
                continue
            if s.idle:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"queue never finished: {s}\n{log.read_text()}")
        numbers = [c.number for c in changes]
        merged = [n for n in numbers if store.record(n)["status"] == "MERGED"]
        assert merged == [numbers[0], numbers[2], numbers[3]]
        for n in numbers:
            finals = [m for m in store.record(n)["messages"] if m["author"] == "lockmaster"
                      and m["tag"].split(":")[-1] in ("success", "failure")]
            assert len(finals) == 1, (n, finals)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
        await server.stop()
