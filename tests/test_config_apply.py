"""`lockmaster config apply FILE` and a worker's SIGHUP on the dev server: running node pools and
TE brokers take the new configuration (one line each says what changed), a bad file is refused
with its line and nothing is sent, nothing running is said and exits 1; a real
`lockmaster worker orchestrator` process reloads its file on SIGHUP and keeps running on a bad
one. The gate queue's part waits for the gate workflow's `reconfigure` signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from typer.testing import CliRunner, Result

from lockmaster.cli import config_cmd
from lockmaster.config.models import LockmasterConfig
from lockmaster.model.gate import QueueStatus, StatusQuery
from lockmaster.model.nodes import PoolStatus, PoolStatusQuery
from lockmaster.model.testenv import BrokerStatus, BrokerStatusQuery
from lockmaster.starters.nodepool import ensure_pools
from lockmaster.workers.reload import Reloader
from tests.test_te_broker_workflow import RecordingHost, broker, te_config, wait_for

ROOT = Path(__file__).resolve().parent.parent


def data_of(config: LockmasterConfig, address: str) -> dict[str, Any]:
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["temporal"]["address"] = address
    return data


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def smaller(data: dict[str, Any]) -> dict[str, Any]:
    """The same deployment with 2 local slots instead of 8 and one TE more on the host."""
    changed = yaml.safe_load(yaml.safe_dump(data))
    changed["nodes"]["providers"][0]["pools"][0]["max-servers"] = 2
    changed["testenvs"]["hosts"][0]["te-count"] += 1
    return changed


def apply(path: Path) -> Result:
    return CliRunner().invoke(config_cmd.app, ["apply", str(path)])


async def pool_status(client: Client, config: LockmasterConfig) -> PoolStatus:
    provider = config.nodes.providers[0].name
    handle = client.get_workflow_handle(
        f"{config.temporal.workflow_id_prefix}nodepool/{provider}/main")
    return await handle.query("status", PoolStatusQuery(), result_type=PoolStatus)


async def broker_status(client: Client, config: LockmasterConfig) -> BrokerStatus:
    handle = client.get_workflow_handle(f"{config.temporal.workflow_id_prefix}te/default")
    return await handle.query("status", BrokerStatusQuery(), result_type=BrokerStatus)


async def signals(client: Client, workflow_id: str) -> int:
    """How many signals the workflow (its current run) received."""
    count = 0
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        count += event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    return count


@contextlib.asynccontextmanager
async def running(client: Client, config: LockmasterConfig) -> AsyncIterator[None]:
    """The deployment's orchestrator (its pool and TE broker running)."""
    async with broker(client, config, RecordingHost()):
        await ensure_pools(client, config)
        yield


async def test_apply_brings_running_pools_and_brokers_to_the_file(
        client: Client, tmp_path: Path) -> None:
    config = te_config(tmp_path)
    prefix = config.temporal.workflow_id_prefix
    data = data_of(config, client.service_client.config.target_host)
    async with running(client, config):
        assert len((await pool_status(client, config)).nodes) == 8
        # The same file again: every workflow is sent it, nothing changes.
        same = await asyncio.to_thread(apply, write(tmp_path / "same.yaml", data))
        assert same.exit_code == 0, same.output
        assert f"{prefix}nodepool/{config.nodes.providers[0].name}/main: reconfigured: sent " \
               "(labels local; 8 slots; max-servers 8)" in same.stdout
        assert f"{prefix}te/default: reconfigured: sent (2 TEs, none added or removed)" \
            in same.stdout

        result = await asyncio.to_thread(apply, write(tmp_path / "new.yaml", smaller(data)))
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert (f"{prefix}nodepool/{config.nodes.providers[0].name}/main: reconfigured: "
                "max-servers 8 -> 2; slots -slot-2 -slot-3 -slot-4 -slot-5 -slot-6 -slot-7"
                ) in lines
        assert f"{prefix}te/default: reconfigured: TEs +tehost0/te3" in lines
        assert len(lines) == 2  # this deployment's workflows only (the server is shared)

        async def took_it() -> bool:
            pool = await pool_status(client, config)
            tes = await broker_status(client, config)
            return pool.max_servers == 2 and len(pool.nodes) == 2 and len(tes.tes) == 3

        await wait_for(took_it, "the pool and the broker reconfigured")


async def test_a_bad_file_is_refused_with_its_line_and_nothing_is_sent(
        client: Client, tmp_path: Path) -> None:
    config = te_config(tmp_path)
    data = data_of(config, client.service_client.config.target_host)
    data["nodes"]["providers"][0]["pools"][0]["max-servers"] = "many"
    bad = write(tmp_path / "bad.yaml", data)
    async with running(client, config):
        pool_id = f"{config.temporal.workflow_id_prefix}nodepool/" \
                  f"{config.nodes.providers[0].name}/main"
        broker_id = f"{config.temporal.workflow_id_prefix}te/default"
        before = (await signals(client, pool_id), await signals(client, broker_id))
        result = await asyncio.to_thread(apply, bad)
        assert result.exit_code == 2, result.output
        assert f"{bad}:" in result.stderr and "max-servers" in result.stderr
        line = next(n for n, text in enumerate(bad.read_text().splitlines(), 1)
                    if "max-servers: many" in text)
        assert f"{bad}:{line}" in result.stderr
        assert "nothing was applied" in result.stderr
        assert result.stdout == ""
        assert (await signals(client, pool_id), await signals(client, broker_id)) == before


async def test_nothing_running_is_said_and_fails(client: Client, tmp_path: Path) -> None:
    config = te_config(tmp_path)
    path = write(tmp_path / "lockmaster.yaml",
                 data_of(config, client.service_client.config.target_host))
    result = await asyncio.to_thread(apply, path)
    assert result.exit_code == 1, result.output
    assert "no running workflows to reconfigure" in result.stderr
    assert f"{config.temporal.workflow_id_prefix}te/default: not running" in result.stdout


async def test_the_reload_keeps_the_old_configuration_on_a_bad_file(
        client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = te_config(tmp_path)
    data = data_of(config, client.service_client.config.target_host)
    path = write(tmp_path / "lockmaster.yaml", data)
    async with running(client, config):
        said: list[str] = []
        reloader = Reloader(client, path, config, "orchestrator", said.append)
        path.write_text("pipelines: [\n")
        with caplog.at_level(logging.ERROR):
            assert await reloader.reload() is None
        assert f"{path} is not valid; still running on the previous configuration" \
            in caplog.text
        assert said == []
        write(path, smaller(data))
        reloader.request()
        result = await reloader.wait()
        assert result is not None and [o.status for o in result.outcomes] == [
            "reconfigured", "reconfigured"]
        assert said[0] == f"configuration {path} applied:"
        assert (await pool_status(client, config)).max_servers == 2
        # Another role only checks the file.
        other = Reloader(client, path, config, "executor", said.append)
        assert await other.reload() is None
        assert "a executor worker applies nothing" in said[-1]


async def test_a_worker_process_reloads_on_sighup(client: Client, tmp_path: Path) -> None:
    config = te_config(tmp_path)
    data = data_of(config, client.service_client.config.target_host)
    path = write(tmp_path / "lockmaster.yaml", data)
    log = tmp_path / "worker.log"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with log.open("w") as output:
        # Its own session: no controlling terminal, as a service (SIGHUP means reload).
        process = subprocess.Popen(
            [sys.executable, "-m", "lockmaster.cli.main", "worker", "orchestrator",
             "--config", str(path)], stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path,
            env=env, start_new_session=True)
    try:
        async def pool_is(size: int) -> bool:
            with contextlib.suppress(Exception):
                return (await pool_status(client, config)).max_servers == size
            return False

        await wait_for(lambda: pool_is(8), "the worker's pool", timeout=60)
        write(path, smaller(data))
        process.send_signal(signal.SIGHUP)
        await wait_for(lambda: pool_is(2), "the pool reconfigured on SIGHUP", timeout=30)
        path.write_text("nodes: {providers: [\n")

        async def logged() -> bool:
            return "is not valid; still running on the previous configuration" in \
                log.read_text()

        process.send_signal(signal.SIGHUP)
        await wait_for(logged, "the bad file logged", timeout=30)
        assert process.poll() is None  # still running
        assert "applied:" in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, log.read_text()


async def test_apply_removes_a_project_from_a_running_queue(
        client: Client, tmp_path: Path) -> None:
    from tests.deployment import deployment, unique_project
    from tests.test_gate_workflow import approve, gate_config, settle

    kept, removed = unique_project("kept"), unique_project("removed")
    queue = f"shared-{kept.split('/')[0]}"
    data = data_of(gate_config(tmp_path, [kept, removed], "sleep 2", queue=queue),
                   client.service_client.config.target_host)
    prefix = data["temporal"]["workflow-id-prefix"] = f"{data['temporal']['task-queue-prefix']}/"
    config = LockmasterConfig.model_validate(data)
    async with deployment(client, config) as dep:
        dep.store.create_project(kept, {"README": "x\n"})
        dep.store.create_project(removed, {"README": "x\n"})
        one = dep.store.upload(kept, files={"a": "a\n"}, subject="a")
        two = dep.store.upload(removed, files={"b": "b\n"}, subject="b")
        three = dep.store.upload(kept, files={"c": "c\n"}, subject="c")
        for change in (one, two, three):
            await approve(dep, change.number)
        wid = f"{prefix}gate/{queue}"
        handle = client.get_workflow_handle(wid)
        everyone = [f"{c.number},1" for c in (one, two, three)]

        async def all_in() -> bool:
            with contextlib.suppress(Exception):
                status = await handle.query("status", StatusQuery(), result_type=QueueStatus)
                return [i.change for i in status.items] == everyone
            return False

        await wait_for(all_in, "the three changes in the queue", timeout=30)

        data["projects"] = [p for p in data["projects"] if p["name"] != removed]
        result = await asyncio.to_thread(apply, write(tmp_path / "new.yaml", data))
        assert result.exit_code == 0, result.output
        [line] = [x for x in result.stdout.splitlines() if x.startswith(f"{wid}: ")]
        # "projects -<removed>" once the gate answers the `settings` query, else the new
        # settings ("now projects <kept>; ...").
        assert line.startswith(f"{wid}: reconfigured: ")
        assert f"-{removed}" in line or removed not in line

        settled = await settle(dep, wid)
        assert dep.store.record(one.number)["status"] == "MERGED"
        assert dep.store.record(three.number)["status"] == "MERGED"
        assert dep.store.record(two.number)["status"] == "NEW"
        assert any(f"{removed} was removed from queue {queue} by a reconfiguration"
                   in m["message"] for m in dep.reports(two.number))
        assert settled.recently_left.get(f"{two.number},1", "").startswith(removed)


HANGUP_CHILD = """
import asyncio, fcntl, sys, termios
from lockmaster.workers.reload import install

fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty is this session's controlling terminal
seen = open(sys.argv[1], "a", buffering=1)


class Reloads:
    def request(self) -> None:
        seen.write("reload\\n")


async def main() -> None:
    stop = asyncio.Event()
    install(stop, Reloads())
    seen.write("ready\\n")
    await stop.wait()
    seen.write("stopped\\n")


asyncio.run(main())
"""


async def test_sighup_reloads_but_a_terminal_hanging_up_stops(tmp_path: Path) -> None:
    """`kill -HUP` reloads; closing the terminal (its SIGHUP) still stops `lockmaster run`."""
    seen = tmp_path / "seen"
    master, slave = os.openpty()
    process = subprocess.Popen([sys.executable, "-c", HANGUP_CHILD, str(seen)], stdin=slave,
                               stdout=slave, stderr=slave, start_new_session=True, cwd=ROOT)
    os.close(slave)

    async def said(*lines: str) -> bool:
        return seen.exists() and seen.read_text().splitlines() == list(lines)

    try:
        await wait_for(lambda: said("ready"), "the child ready", timeout=30)
        process.send_signal(signal.SIGHUP)
        await wait_for(lambda: said("ready", "reload"), "a reload", timeout=10)
        os.close(master)  # the terminal goes away
        master = -1
        await wait_for(lambda: said("ready", "reload", "stopped"), "a stop", timeout=10)
        assert await asyncio.to_thread(process.wait, 10) == 0
    finally:
        if master >= 0:
            os.close(master)
        if process.poll() is None:
            process.kill()
