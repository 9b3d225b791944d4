"""Reported log URLs work when lockmaster serves the log storage; `temporal setup` registers the
search attributes on a server that lacks them."""

from __future__ import annotations

from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from lockmaster.logserver import LogServer
from lockmaster.temporal import search_attributes
from lockmaster.temporal.devserver import temporal_binary
from lockmaster.temporal.setup import register_search_attributes
from tests.deployment import deployment, make_config, unique_project


async def test_reported_log_url_serves_the_job_output(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    server = LogServer(tmp_path / "state" / "logs", port=0).start()
    try:
        config = make_config(
            tmp_path,
            projects=[{"name": name, "connection": "local",
                       "pipelines": {"check": {"jobs": ["hello"]}}}],
            jobs=[{"name": "hello", "run": "echo hello from the job", "nodeset": "local"}],
        )
        config.logs.url = f"http://127.0.0.1:{server.port}"
        async with deployment(client, config) as dep:
            dep.store.create_project(name, {"README": "x\n"})
            info, actions = await dep.upload(name, files={"a": "a\n"}, subject="A")
            outcome = await dep.outcome(actions[0].workflow_id or "")
        [report] = dep.reports(info.number)
        url = report["message"].splitlines()[2].split()[2]
        assert url == outcome.builds[0].log_url
        async with httpx.AsyncClient() as http:
            response = await http.get(url + "job-output.txt")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert "hello from the job" in response.text
    finally:
        server.stop()


async def test_temporal_setup_registers_missing_search_attributes() -> None:
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_binary(),
                                                dev_server_log_level="error")
    try:
        added = await register_search_attributes(env.client)
        assert added == sorted(key.name for key in search_attributes.ALL)
        assert await register_search_attributes(env.client) == []
    finally:
        await env.shutdown()
