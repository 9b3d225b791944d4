"""Two executors, each with its own disk, one log store: every log URL a report links works,
whichever executor ran the job, and after the executors' local copies are gone."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from lockmaster.config.models import LockmasterConfig, LogStore
from lockmaster.logserver import LogServer
from lockmaster.workers.executor import executor_worker
from tests.deployment import deployment, make_config, unique_project

TOKEN = "two-executors-one-store"


def with_store(config: LockmasterConfig, port: int, token: Path) -> LockmasterConfig:
    config.logs.url = f"http://127.0.0.1:{port}"
    config.logs.store = LogStore(driver="http", url=f"http://127.0.0.1:{port}",
                                 token_file=token, live_interval=0.2, upload_timeout=10)
    return config


async def test_two_executors_one_store_every_reported_url_answers(
        client: Client, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    server = LogServer(tmp_path / "log-host", port=0, token_file=token).start()
    name = unique_project()
    jobs = [f"job{i}" for i in range(4)]
    layout = {
        "projects": [{"name": name, "connection": "local",
                      "pipelines": {"check": {"jobs": jobs}}}],
        # Each job says where it ran (the workspace lies under its executor's state dir) and
        # takes a moment, so that each executor (one build at a time) gets some.
        "jobs": [{"name": job, "nodeset": "local",
                  "run": f"echo {job} ran in $LOCKMASTER_WORKSPACE; sleep 1"} for job in jobs],
    }
    first = with_store(make_config(tmp_path / "a", **layout), server.port, token)
    prefix = first.temporal.task_queue_prefix
    second = with_store(make_config(tmp_path / "b", prefix=prefix, **layout), server.port, token)
    assert first.state_path != second.state_path
    try:
        async with deployment(client, first, executor=False) as dep:
            # Two executor processes: each its own connection (one client polls a task
            # queue with one worker).
            other = await Client.connect(client.service_client.config.target_host,
                                         namespace=client.namespace,
                                         data_converter=pydantic_data_converter)
            async with contextlib.AsyncExitStack() as stack:
                for config, connection in ((first, client), (second, other)):
                    await stack.enter_async_context(executor_worker(
                        connection, config, dep.drivers, heartbeat_interval=0.5,
                        max_concurrent_builds=1))
                dep.store.create_project(name, {"README": "x\n"})
                info, actions = await dep.upload(name, files={"a": "a\n"}, subject="A")
                outcome = await dep.outcome(actions[0].workflow_id or "", timeout=60)
        assert [b.result for b in outcome.builds] == ["SUCCESS"] * 4
        [report] = dep.reports(info.number)
        urls = [line.split()[2] for line in report["message"].splitlines() if line.startswith("- ")]
        assert sorted(urls) == sorted(b.log_url for b in outcome.builds)
        # The executors' disks: nothing left to deliver, and gone altogether now.
        for config in (first, second):
            assert not list(config.logs_spool.rglob("job-output.txt"))
            assert not list(config.logs_root.rglob("job-output.txt"))  # never written there
            shutil.rmtree(config.state_path)
        ran_in: set[str] = set()
        async with httpx.AsyncClient() as http:
            responses = await asyncio.gather(*(http.get(url + "job-output.txt") for url in urls))
        for url, response in zip(urls, responses, strict=True):
            assert url.startswith(f"http://127.0.0.1:{server.port}/"), url
            assert response.status_code == 200, url
            assert "RESULT: SUCCESS" in response.text
            ran_in.update(str(root) for root in (tmp_path / "a", tmp_path / "b")
                          if f"ran in {root}/" in response.text)
        assert ran_in == {str(tmp_path / "a"), str(tmp_path / "b")}, "one executor ran all"
    finally:
        server.stop()
