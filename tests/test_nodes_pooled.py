"""The executor's node pool client: asks with a signal and waits on the shared `request_statuses`
query (lockmaster/temporal/status_watch.py). When the pool's workflow is busy (many builds asking
at once) Temporal refuses queries beyond its buffer (RESOURCE_EXHAUSTED) or a query times out
(CANCELLED): the request is looked at again, never turned into a node failure. A request the
pool has not taken in yet reads "gone": still waiting.
Found by bench/nodepool_latency.py (200 requests queued at once)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.model.base import IdsQuery
from lockmaster.model.nodes import NodeRequest, NodeRequestStatus, NodeRequestStatuses, RequestState
from lockmaster.nodes import pooled
from lockmaster.nodes.base import NodeError
from lockmaster.nodes.pooled import PooledNodes
from tests.deployment import make_config


def refusal(status: RPCStatusCode) -> RPCError:
    return RPCError("consistent query buffer is full", status, b"")


class Pool:
    """A pool workflow's handle: `request_statuses` queries answer `answers` in turn (an
    RPCStatusCode raises it, a RequestState is the request's state), then fulfilled. Signals are
    recorded."""

    id = "t/nodepool/cloud/main"

    def __init__(self, answers: list[RPCStatusCode | RequestState],
                 signal_error: RPCStatusCode | None = None) -> None:
        self.answers = list(answers)
        self.signal_error = signal_error
        self.query_calls = 0
        self.signals: list[str] = []

    def get_workflow_handle(self, _: str) -> Pool:
        return self

    async def query(self, name: str, query: IdsQuery, result_type: Any, **_: Any
                    ) -> NodeRequestStatuses:
        assert name == "request_statuses"
        self.query_calls += 1
        answer = self.answers.pop(0) if self.answers else RequestState.FULFILLED
        if isinstance(answer, RPCStatusCode):
            raise refusal(answer)
        return NodeRequestStatuses(statuses=[NodeRequestStatus(id=i, state=answer)
                                             for i in query.ids])

    async def signal(self, name: str, _: Any) -> None:
        self.signals.append(name)
        if self.signal_error is not None:
            raise refusal(self.signal_error)


def source(tmp_path: Path, pool: Pool) -> PooledNodes:
    config = make_config(tmp_path, projects=[], jobs=[])
    return PooledNodes(pool, config, config.state_path)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pooled, "WATCH_JOIN", 0.001)
    monkeypatch.setattr(pooled, "WATCH_FIRST", 0.002)
    monkeypatch.setattr(pooled, "WATCH_MAX", 0.002)


async def ask(nodes: PooledNodes) -> NodeRequestStatus:
    try:
        return await nodes._ask(nodes.specs[0], NodeRequest(id="b1", labels=["local"]))
    finally:
        if nodes._renewer is not None:
            nodes._renewer.cancel()
            await asyncio.gather(nodes._renewer, return_exceptions=True)


async def test_request_not_taken_in_yet_is_still_waiting(tmp_path: Path) -> None:
    pool = Pool([RequestState.GONE, RequestState.GONE, RequestState.PENDING])
    status = await ask(source(tmp_path, pool))
    assert status.state is RequestState.FULFILLED
    assert pool.signals == ["submit_request"]  # asked once, nothing withdrawn


async def test_request_lost_after_being_seen_is_asked_again(tmp_path: Path) -> None:
    pool = Pool([RequestState.PENDING, RequestState.GONE, RequestState.PENDING])
    status = await ask(source(tmp_path, pool))
    assert status.state is RequestState.FULFILLED
    assert pool.signals == ["submit_request", "submit_request"]


async def test_busy_status_query_is_asked_again(tmp_path: Path) -> None:
    pool = Pool([RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.CANCELLED])
    status = await ask(source(tmp_path, pool))
    assert status.state is RequestState.FULFILLED
    assert pool.query_calls == 3


async def test_declined_request_is_withdrawn(tmp_path: Path) -> None:
    pool = Pool([RequestState.PENDING, RequestState.DECLINED])
    status = await ask(source(tmp_path, pool))
    assert status.state is RequestState.DECLINED
    assert pool.signals == ["submit_request", "return_nodes"]


async def test_unreachable_pool_is_a_node_error(tmp_path: Path) -> None:
    pool = Pool([], signal_error=RPCStatusCode.NOT_FOUND)
    with pytest.raises(NodeError, match="is not reachable"):
        await ask(source(tmp_path, pool))


async def test_pool_busy_for_too_long_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pooled, "BUSY_TIMEOUT", 0.05)
    pool = Pool([RPCStatusCode.RESOURCE_EXHAUSTED] * 10000)
    with pytest.raises(RPCError):
        await ask(source(tmp_path, pool))
    assert 1 < pool.query_calls < 10000
