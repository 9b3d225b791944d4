"""Waiting builds share one status query per workflow (issue 14), on the real dev server: 30
builds waiting on one node pool, or a dozen holders on one TE broker, cost one batched query per
round (never two at once, never one per waiter); a build cancelled while it waits withdraws its
request and is no longer asked for; the event loop stays free for the executor's heartbeats."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle

from lockmaster.model.base import IdsQuery
from lockmaster.model.nodes import NodeRequestStatuses, RequestState
from lockmaster.model.testenv import LeaseState, LeaseStatuses
from lockmaster.nodes.pooled import PooledNodes
from tests.test_nodepool_workflow import local_config, pools, status
from tests.test_te_broker_workflow import RecordingHost, broker, holder, te_config

BATCHED = ("request_statuses", "lease_statuses")


class Queries:
    """Counts the workflow queries this process sends (by name), how many ids each batched one
    carried, and the most sent to one workflow at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[str] = Counter()
        self.batches: list[list[str]] = []
        self.in_flight: Counter[str] = Counter()
        self.most_in_flight = 0
        original = WorkflowHandle.query

        async def query(handle: WorkflowHandle, name: Any, *args: Any, **kw: Any) -> Any:
            self.calls[name] += 1
            if name in BATCHED:
                self.batches.append(list(args[0].ids))
                self.in_flight[handle.id] += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight[handle.id])
            try:
                return await original(handle, name, *args, **kw)
            finally:
                if name in BATCHED:
                    self.in_flight[handle.id] -= 1

        monkeypatch.setattr(WorkflowHandle, "query", query)


class Ticker:
    """Stands in for the executor's heartbeat task: the longest gap between its ticks."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.longest = 0.0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_thirty_builds_waiting_on_one_pool_share_one_query_per_round(
        client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = local_config(tmp_path, slots=3)
    queries = Queries(monkeypatch)
    async with pools(client, config):
        source = PooledNodes(client, config, config.state_path)
        served: list[str] = []
        ticker = Ticker()

        async def build(i: int) -> None:
            nodeset = await source.acquire_nodeset(["local"], f"b{i:02d}", position=i)
            served.append(nodeset.request_id)
            await asyncio.sleep(0.1)
            await source.release_nodeset(nodeset)

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(build(i) for i in range(30))), 120)
        took = time.monotonic() - started
        await ticker.stop()
    assert sorted(served) == [f"b{i:02d}" for i in range(30)]
    assert queries.calls["request_status"] == 0  # nobody asks for itself
    rounds = queries.calls["request_statuses"]
    assert queries.most_in_flight == 1  # one query at a time for the whole process
    # One query per round for everybody waiting: while they all wait, a round asks for most.
    assert max(len(ids) for ids in queries.batches) >= 25
    # Rounds are at least 50 ms apart: never more than 20 a second, however many wait (30
    # waiters polling for themselves asked about 30 a second once backed off to 1 s).
    assert rounds <= took / 0.05 + 5, (rounds, took)
    looks = sum(len(ids) for ids in queries.batches)
    assert looks / rounds > 5, (looks, rounds)  # each query answered for many waiters
    assert ticker.longest < 0.5


async def test_a_build_cancelled_while_waiting_withdraws_and_is_no_longer_asked_for(
        client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = local_config(tmp_path, slots=1)
    queries = Queries(monkeypatch)
    async with pools(client, config) as ops:
        source = PooledNodes(client, config, config.state_path)
        first = await source.acquire_nodeset(["local"], "holder")
        waiting = {i: asyncio.create_task(source.acquire_nodeset(["local"], f"w{i}"))
                   for i in range(5)}
        await asyncio.sleep(1.0)
        assert not any(t.done() for t in waiting.values())
        waiting[2].cancel()
        await asyncio.gather(waiting[2], return_exceptions=True)
        asked = len(queries.batches)
        for _ in range(50):
            pool = await status(ops)
            if "w2" not in {r.id for r in pool.requests}:
                break
            await asyncio.sleep(0.1)
        assert {r.id: r.state for r in pool.requests} == {
            "holder": RequestState.FULFILLED, **{f"w{i}": RequestState.PENDING
                                                 for i in (0, 1, 3, 4)}}
        await asyncio.sleep(1.0)
        later = queries.batches[asked + 1:]  # one round may have been in flight
        assert later and all("w2" not in ids for ids in later)
        await source.release_nodeset(first)
        # The four were asked for at once: the pool takes them in the order their signals
        # arrived, which need not be the order they were sent. Each gets the one node in turn.
        left = {waiting[i] for i in (0, 1, 3, 4)}
        while left:
            done, left = await asyncio.wait(left, timeout=30,
                                            return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1, (done, await status(ops))  # one node: one holder at a time
            await source.release_nodeset(done.pop().result())
    assert queries.most_in_flight == 1


async def test_the_single_request_status_query_still_answers(
        client: Client, tmp_path: Path) -> None:
    """Operators and the `temporal` CLI keep `request_status`; the batched one answers alike."""
    config = local_config(tmp_path, slots=1)
    async with pools(client, config) as ops:
        source = PooledNodes(client, config, config.state_path)
        nodeset = await source.acquire_nodeset(["local"], "b1")
        handle = client.get_workflow_handle(ops.handle(ops.specs[0]).id)
        batched = (await handle.query("request_statuses", IdsQuery(ids=["b1", "nope"]),
                                      result_type=NodeRequestStatuses)).statuses
        assert [(s.id, s.state) for s in batched] == [("b1", RequestState.FULFILLED),
                                                      ("nope", RequestState.GONE)]
        assert batched[0].nodes and batched[0].nodes[0].request_id == "b1"
        await source.release_nodeset(nodeset)


async def test_holders_waiting_on_one_broker_share_one_query_per_round(
        client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = te_config(tmp_path, per_host=2)
    queries = Queries(monkeypatch)
    host = RecordingHost()
    async with broker(client, config, host) as ops:
        granted: list[str] = []

        async def use(i: int) -> None:
            h = holder(client, config, f"h{i:02d}")
            lease = await h.acquire(timeout=60)
            assert lease.state is LeaseState.GRANTED
            granted.append(h.lease_id)
            await asyncio.sleep(0.05)
            await h.release()

        await asyncio.wait_for(asyncio.gather(*(use(i) for i in range(12))), 120)
        handle = client.get_workflow_handle(f"{config.temporal.workflow_id_prefix}te/default")
        [gone] = (await handle.query("lease_statuses", IdsQuery(ids=["h00"]),
                                     result_type=LeaseStatuses)).statuses
        assert gone.state is LeaseState.ENDED and "released" in (gone.reason or "")
        [broker_status] = await ops.status()
        assert broker_status.waiting == []
    assert sorted(granted) == [f"h{i:02d}" for i in range(12)]
    assert queries.calls["lease_status"] == 0
    assert queries.most_in_flight == 1
    assert max(len(ids) for ids in queries.batches) >= 8
