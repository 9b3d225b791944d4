"""The node pool workflow on the real dev server, with local slots (no cloud): requests, leases,
operators, continue-as-new, autohold; the executor's client (`PooledNodes`) is what asks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from lockmaster.cli.main import app
from lockmaster.config.models import LockmasterConfig
from lockmaster.model.nodes import (
    Autohold,
    NodeRequest,
    NodeRequestStatus,
    NodeState,
    PoolStatus,
    PoolStatusQuery,
    RequestState,
    RequestStatusQuery,
)
from lockmaster.nodes.base import NodeError
from lockmaster.nodes.pooled import PooledNodes
from lockmaster.review.registry import review_drivers
from lockmaster.starters.nodepool import NodePools, PoolError, ensure_pools
from lockmaster.workers.orchestrator import orchestrator_worker
from tests.deployment import make_config


def local_config(tmp_path: Path, slots: int = 2, **nodes: object) -> LockmasterConfig:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    config = make_config(tmp_path, projects=[], jobs=[], prefix=prefix, providers=[
        {"name": "dev", "driver": "local",
         "pools": [{"name": "main", "labels": ["local", "other"], "max-servers": slots}]},
    ])
    # Every workflow of this test (pools, autoholds) has its own id.
    temporal = config.temporal.model_copy(update={"workflow_id_prefix": f"{prefix}/"})
    return config.model_copy(update={"nodes": config.nodes.model_copy(update=nodes),
                                     "temporal": temporal})


@contextlib.asynccontextmanager
async def pools(client: Client, config: LockmasterConfig, **kw: object
                ) -> AsyncIterator[NodePools]:
    async with orchestrator_worker(client, config, review_drivers(config)):
        await ensure_pools(client, config, **kw)  # type: ignore[arg-type]
        yield NodePools(client, config)


async def status(ops: NodePools) -> PoolStatus:
    [found] = await ops.status()
    return found


async def test_nodesets_are_served_in_turn_and_slots_come_back(
        client: Client, tmp_path: Path) -> None:
    config = local_config(tmp_path, slots=2)
    async with pools(client, config) as ops:
        source = PooledNodes(client, config, config.state_path)
        first = await source.acquire_nodeset(["local", "other"], "b1")
        assert [n.info.label for n in first.nodes] == ["local", "other"]
        assert all(Path(n.workspace).is_dir() for n in first.nodes)  # type: ignore[attr-defined]
        waiting = asyncio.create_task(source.acquire_nodeset(["local"], "b2"))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # both slots are in use
        pool = await status(ops)
        assert {r.id: r.state for r in pool.requests} == {
            "b1": RequestState.FULFILLED, "b2": RequestState.PENDING}
        await source.release_nodeset(first)
        second = await asyncio.wait_for(waiting, 10)
        assert second.nodes[0].info.provider == config.nodes.providers[0].name
        await source.release_nodeset(second)
        await asyncio.sleep(0.3)
        pool = await status(ops)
        assert pool.requests == []
        assert {n.state for n in pool.nodes} == {NodeState.READY}


async def test_unserved_label_is_a_node_failure_naming_what_is_served(
        client: Client, tmp_path: Path) -> None:
    config = local_config(tmp_path)
    async with pools(client, config):
        source = PooledNodes(client, config, config.state_path)
        with pytest.raises(NodeError, match="labels served: local, other"):
            await source.acquire_nodeset(["gpu"], "b1")
        with pytest.raises(NodeError, match="has 2 slots"):
            await source.acquire_nodeset(["local"] * 3, "b2")


async def test_holder_that_stops_renewing_loses_its_nodes(client: Client, tmp_path: Path) -> None:
    config = local_config(tmp_path, slots=1, lease_timeout=1.0)
    async with pools(client, config) as ops:
        handle = ops.handle(ops.specs[0])
        got = await handle.execute_update(
            "request_nodes", NodeRequest(id="gone", labels=["local"], lease_seconds=1.0),
            result_type=NodeRequestStatus)
        assert got.state is RequestState.FULFILLED
        # Nobody renews: within the lease the slot is free again for the next holder.
        source = PooledNodes(client, config, config.state_path)
        nodeset = await asyncio.wait_for(source.acquire_nodeset(["local"], "next"), 10)
        gone = await handle.query("request_status", RequestStatusQuery(id="gone"),
                                  result_type=NodeRequestStatus)
        assert gone.state is RequestState.GONE
        # A holder that renews keeps its nodes past the lease.
        await asyncio.sleep(2.0)
        kept = await handle.query("request_status", RequestStatusQuery(id="next"),
                                  result_type=NodeRequestStatus)
        assert kept.state is RequestState.FULFILLED
        await source.release_nodeset(nodeset)


async def test_disabled_provider_declines_then_serves_again(client: Client, tmp_path: Path) -> None:
    config = local_config(tmp_path)
    provider = config.nodes.providers[0].name
    async with pools(client, config) as ops:
        source = PooledNodes(client, config, config.state_path)
        [message] = await ops.set_enabled(provider, False, "maintenance")
        assert "disabled" in message
        with pytest.raises(NodeError, match="disabled: maintenance"):
            await source.acquire_nodeset(["local"], "b1")
        await ops.set_enabled(provider, True, "")
        nodeset = await source.acquire_nodeset(["local"], "b2")
        await source.release_nodeset(nodeset)
        with pytest.raises(PoolError, match="no provider 'nope'"):
            await ops.set_enabled("nope", False, "")


async def test_pool_continues_as_new_with_its_state(client: Client, tmp_path: Path) -> None:
    config = local_config(tmp_path, slots=3)
    async with pools(client, config, max_history_events=40) as ops:
        source = PooledNodes(client, config, config.state_path)
        held = await source.acquire_nodeset(["local"], "held")
        for i in range(12):
            nodeset = await source.acquire_nodeset(["other"], f"b{i}")
            await source.release_nodeset(nodeset)
        handle = ops.handle(ops.specs[0])
        runs = [w async for w in client.list_workflows(f'WorkflowId = "{handle.id}"')]
        assert len(runs) >= 2, "the pool never continued as new"
        pool = await status(ops)
        assert [r.id for r in pool.requests] == ["held"]
        assert sum(n.state is NodeState.IN_USE for n in pool.nodes) == 1
        await source.release_nodeset(held)


async def test_autohold_is_claimed_once_per_count(client: Client, tmp_path: Path) -> None:
    config = local_config(tmp_path)
    async with pools(client, config) as ops:
        result = await ops.autohold_add(Autohold(id="", project="org/p", job="unit",
                                                 reason="debug flaky", count=2, by="alice"))
        assert result.ok and "next 2 failing build(s) of unit" in result.message
        [listed] = (await ops.autohold_list()).autoholds
        assert listed.by == "alice"
        source = PooledNodes(client, config, config.state_path)
        claims = [await source.claim_autohold("org/p", "unit", 1) for _ in range(3)]
        assert [c.held for c in claims] == [True, True, False]
        # The held node says whose autohold kept it, and why.
        assert claims[0].reason == f"autohold {listed.id} by alice: debug flaky"
        assert claims[0].hold_until is not None
        assert (await ops.autohold_list()).autoholds == []
        await ops.autohold_add(Autohold(id="x1", project="org/p", job="lint", change=7,
                                        reason="r"))
        assert not (await source.claim_autohold("org/p", "lint", 8)).held
        assert (await ops.autohold_remove("x1")).ok
        assert not (await ops.autohold_remove("x1")).ok


async def test_status_query_is_what_operators_see(client: Client, tmp_path: Path) -> None:
    config = local_config(tmp_path)
    async with pools(client, config) as ops:
        handle = ops.handle(ops.specs[0])
        pool = await handle.query("status", PoolStatusQuery(), result_type=PoolStatus)
        assert pool.enabled and len(pool.nodes) == 2 and pool.driver.value == "local"


async def test_nodes_cli(temporal_env: WorkflowEnvironment, client: Client, tmp_path: Path
                         ) -> None:
    config = local_config(tmp_path)
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["temporal"]["address"] = temporal_env.client.service_client.config.target_host
    config_file = tmp_path / "lockmaster.yaml"
    config_file.write_text(yaml.safe_dump(data))
    runner = CliRunner()

    def cli(*args: str) -> Result:
        return runner.invoke(app, ["nodes", *args, "--config", str(config_file)])

    async with pools(client, config):
        listed = await asyncio.to_thread(cli, "list")
        assert listed.exit_code == 0, listed.output
        assert "slot-0" in listed.output and "dev/main (local): enabled" in listed.output
        held = await asyncio.to_thread(cli, "hold", "slot-0")
        assert held.exit_code == 2 and "slots cannot be held" in held.output
        missing = await asyncio.to_thread(cli, "delete", "nope")
        assert missing.exit_code == 2 and "no node 'nope'" in missing.output
        off = await asyncio.to_thread(cli, "disable", "dev", "--reason", "maintenance",
                                      "--user", "alice")
        assert off.exit_code == 0 and "disabled" in off.output
        listed = await asyncio.to_thread(cli, "list", "--json")
        [pool] = json.loads(listed.output)
        assert (pool["enabled"], pool["disabled_by"], pool["disabled_reason"]) == (
            False, "alice", "maintenance")
        listed = await asyncio.to_thread(cli, "list")
        assert "dev/main (local): DISABLED (alice: maintenance)" in listed.output
        bad = await asyncio.to_thread(cli, "autohold", "add", "--project", "x/y", "--job", "j",
                                      "--reason", "r")
        assert bad.exit_code == 2 and "project 'x/y' is not configured" in bad.output
