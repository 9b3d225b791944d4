"""The web service's JSON API and pages (lockmaster/web) over HTTP: a real gate on the dev server
behind /api/status, bad filters (400), unknown changes (404), Temporal down (503, the server
stays up)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from temporalio.client import Client

from lockmaster.config.models import LockmasterConfig
from lockmaster.web.app import build_app
from lockmaster.web.context import WebContext
from lockmaster.web.server import WebServer
from tests.deployment import deployment, unique_project
from tests.ports import free_port
from tests.test_gate_workflow import approve, gate_config, settle


@asynccontextmanager
async def web_client(config: LockmasterConfig, client: Client | None) -> AsyncIterator[TestClient]:
    ctx = WebContext(config=config, state_dir=config.state_path, client=client, results=None)
    async with TestClient(TestServer(build_app(ctx))) as http:
        yield http


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_a_running_gate_through_the_api(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    # The jobs run until the test has looked (bounded: 120 s), not for a fixed time a slow
    # refresh on a loaded machine could miss.
    release = tmp_path / "release"
    config = gate_config(
        tmp_path, [name],
        f"i=0; while [ ! -f {release} ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done")
    async with deployment(client, config) as dep, web_client(config, client) as http:
        dep.store.create_project(name, {"README": "x\n"})
        changes = [dep.store.upload(name, files={f: f + "\n"}, subject=f) for f in ("a", "b")]
        for change in changes:
            await approve(dep, change.number)

        async def running() -> dict | None:
            response = await http.get("/api/status")
            assert response.status == 200
            view = await response.json()
            gate = next(p for p in view["pipelines"] if p["name"] == "gate")
            queue = next((q for q in gate["queues"] if q["name"] == name), None)
            if queue is None or len(queue["items"]) < 2:
                return None
            second = queue["items"][1]
            if not any(j["state"] == "running" for j in second["jobs"]):
                return None
            return queue

        queue = await until(running)
        first, second = queue["items"]
        assert [first["number"], second["number"]] == [c.number for c in changes]
        assert second["stack"] == [first["change"]]  # tested on the change ahead
        job = next(j for j in second["jobs"] if j["state"] == "running")
        assert job["elapsed"] is not None and job["started"] is not None
        test = next(j for j in second["jobs"] if j["name"] == "test")
        if test["state"] == "waiting":
            assert test["waiting"] is None or test["waiting"]["kind"] in ("dependency", "node")

        # The change's own entry, and the same through the filters.
        response = await http.get(f"/api/change/{second['number']}")
        assert response.status == 200
        entries = (await response.json())["entries"]
        assert [e["pipeline"] for e in entries] == ["gate"]
        assert entries[0]["item"]["change"] == second["change"]
        response = await http.get(f"/api/status?project={name}&change={first['number']}")
        view = await response.json()
        assert view["matched"] == 1

        # The pool the jobs run in, by state against its quota.
        nodes = await (await http.get("/api/nodes")).json()
        pool = next(p for p in nodes["pools"] if p["provider"] == config.nodes.providers[0].name)
        assert pool["quota"]["max_servers"] == 8
        assert sum(pool["by_state"].values()) == len(pool["nodes"])
        assert (await http.get("/api/tes")).status == 200
        assert (await (await http.get("/api/publications")).json())["recent"] == []

        release.touch()
        await settle(dep, f"gate/{name}")
        # Its start report linked to its entry (issue 16: reports link to the status page).
        started = [m["message"] for m in dep.reports(second["number"])
                   if m["message"].startswith("Starting gate jobs.")]
        assert started == [f"Starting gate jobs.\n\n{config.web.url}/change/{second['number']}"]
        # Merged: the change is in no pipeline now (once the page's short cache has expired).
        async def gone() -> Any:
            response = await http.get(f"/api/change/{second['number']}")
            return response if response.status == 404 else None

        response = await until(gone, timeout=30)
        body = await response.json()
        assert "in no pipeline" in body["error"] and body["hint"]


async def test_bad_filters_and_unknown_changes(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = gate_config(tmp_path, [name], "true")
    async with web_client(config, client) as http:
        response = await http.get("/api/status?project=no/such")
        assert response.status == 400
        body = await response.json()
        assert body["error"] == "no project 'no/such'" and name in body["hint"]
        response = await http.get("/api/status?change=twelve")
        assert response.status == 400
        assert "number" in (await response.json())["error"]
        response = await http.get("/api/change/987654")
        assert response.status == 404
        assert "987654" in (await response.json())["error"]
        response = await http.get("/api/no-such-endpoint")
        assert response.status == 404
        assert set(await response.json()) == {"error", "hint"}
        response = await http.get("/api/status", headers={"Accept-Encoding": "gzip"})
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"  # polled every 2 s by every page
        view = await response.json()
        assert [p["name"] for p in view["pipelines"]] == ["check", "gate"]


async def test_temporal_down_is_503_and_the_server_stays_up(tmp_path: Path) -> None:
    config = gate_config(tmp_path, [unique_project()], "true")
    config.temporal.address = f"127.0.0.1:{free_port()}"  # nothing listens there
    async with web_client(config, None) as http:
        for path in ("/api/status", "/api/status", "/api/nodes", "/api/change/1"):
            response = await http.get(path)
            assert response.status == 503, path
            body = await response.json()
            assert config.temporal.address in body["error"]
            assert "not reachable" in body["error"] and body["hint"]
        page = await http.get("/")
        assert page.status == 200  # the page itself renders, and says so from the API


async def test_pages_share_the_layout(tmp_path: Path) -> None:
    config = gate_config(tmp_path, [unique_project()], "true")
    async with web_client(config, None) as http:
        for path, title in (("/", "Status"), ("/nodes", "Nodes"), ("/tes", "TEs"),
                            ("/publications", "Publications"), ("/change/42", "Change 42")):
            response = await http.get(path)
            assert response.status == 200, path
            text = await response.text()
            assert f"<title>{title} · lockmaster</title>" in text
            for label, href in (("Status", "/"), ("Builds", "/builds"),
                                ("Signatures", "/signatures")):
                assert f'<a href="{href}"' in text and label in text
        deep = await (await http.get("/change/42")).text()
        assert 'data-change="42"' in deep
        for asset in ("common.js", "status.js", "lockmaster.css", "nodes.js"):
            assert (await http.get(f"/static/{asset}")).status == 200, asset


def test_the_server_on_a_taken_port_raises_and_leaves_nothing_running(tmp_path: Path) -> None:
    import socket

    config = gate_config(tmp_path, [unique_project()], "true")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        server = WebServer(config, port=port, open_results=False)
        try:
            server.start()
        except OSError:
            pass
        else:
            server.stop()
            raise AssertionError("a taken port should not serve")
        free = WebServer(config, port=0, open_results=False).start()
        try:
            assert free.port != 0
            import urllib.request

            with urllib.request.urlopen(f"{free.url}/nodes", timeout=10) as response:
                assert response.status == 200
        finally:
            free.stop()
    finally:
        holder.close()


def test_lockmaster_run_starts_it_as_an_auxiliary_server(tmp_path: Path) -> None:
    """`lockmaster run`'s auxiliary servers (workers/aux_servers.py): the web service on
    web.port; a port already taken is a warning and nothing else stops."""
    import socket
    import urllib.request

    from lockmaster.workers.aux_servers import WEB, start_aux_servers

    config = gate_config(tmp_path, [unique_project()], "true")
    config.web.port = free_port()
    said: list[str] = []
    servers = start_aux_servers(config, "launcher", said.append, web=True)
    try:
        assert said == [] and servers.url(WEB) == config.web.url
        with urllib.request.urlopen(f"http://127.0.0.1:{config.web.port}/tes",
                                    timeout=10) as response:
            assert response.status == 200
    finally:
        servers.stop()
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        config.web.port = holder.getsockname()[1]
        servers = start_aux_servers(config, "launcher", said.append, web=True)
        servers.stop()
    finally:
        holder.close()
    assert servers.url(WEB) is None
    assert len(said) == 1 and said[0].startswith("the web service did not start")
    assert f"127.0.0.1:{config.web.port}" in said[0] and "web.port" in said[0]


async def test_a_queue_whose_worker_is_down_is_listed_not_an_error(
        client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = gate_config(tmp_path, [name], "true")
    dead = f"gate/{name}-dead"
    # A queue workflow nobody polls for: its worker is down.
    await client.start_workflow("GateQueueWorkflow", {}, id=dead,
                                task_queue=f"nobody-{name}")
    try:
        async with web_client(config, client) as http:
            for _ in range(2):  # asked, then remembered as not answering for a while
                response = await http.get("/api/status")
                assert response.status == 200
                view = await response.json()
                gate = next(p for p in view["pipelines"] if p["name"] == "gate")
                assert [u for u in gate["unanswered"] if u.startswith(f"{dead}: ")], gate
    finally:
        await client.get_workflow_handle(dead).terminate("test over")


async def test_a_build_waiting_for_a_node_says_its_place_in_the_pool(
        client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 8")
    config.nodes.providers[0].pools[0].max_servers = 1  # one slot: the second build waits
    pool = f"{config.nodes.providers[0].name}/main"
    async with deployment(client, config) as dep, web_client(config, client) as http:
        # Queues of earlier tests whose workers are gone are asked (and found not answering)
        # once now, not while the builds wait.
        assert (await http.get("/api/status")).status == 200
        dep.store.create_project(name, {"README": "x\n"})
        changes = [dep.store.upload(name, files={f: f + "\n"}, subject=f) for f in ("a", "b")]
        for change in changes:
            await approve(dep, change.number)

        async def waiting_for_a_node() -> tuple[dict, dict] | None:
            view = await (await http.get(f"/api/status?project={name}")).json()
            for queue in view["pipelines"][1]["queues"]:
                for item in queue["items"]:
                    for job in item["jobs"]:
                        if job["waiting"] and job["waiting"]["kind"] == "node":
                            return item, job
            return None

        item, job = await until(waiting_for_a_node)
        why = job["waiting"]
        assert why["pool"] == pool and why["labels"] == ["local"]
        assert why["position"] == 0 and why["queue_length"] >= 1
        assert f"from {pool}: next in the queue" in why["text"]
        assert job["state"] == "running"  # its build started; it has no node yet
        if not any(j["state"] == "running" and j["waiting"] is None for j in item["jobs"]):
            assert item["waiting"] == why  # nothing of the item runs: it says why too
        await settle(dep, f"gate/{name}")


async def read_event(response: Any) -> tuple[str, dict]:
    """One server-sent event: (event, data as JSON)."""
    event, data = "", ""
    while True:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            data += line[len("data: "):]
        elif line == "" and event:
            import json

            return event, json.loads(data)


async def test_the_status_as_server_sent_events(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = gate_config(tmp_path, [name], "true")
    async with web_client(config, client) as http:
        response = await http.get(f"/api/status/stream?project={name}")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for _ in range(2):  # the view, and again
            event, view = await read_event(response)
            assert event == "status" and view["filters"]["project"] == name
        response.close()
        bad = await http.get("/api/status/stream?change=x")
        assert bad.status == 400 and "number" in (await bad.json())["error"]
    config.temporal.address = f"127.0.0.1:{free_port()}"
    async with web_client(config, None) as http:
        response = await http.get("/api/status/stream")
        event, error = await read_event(response)
        assert event == "error" and "not reachable" in error["error"]
        response.close()
