"""The shared status watch (issue 14) with a fake query: every waiter of a process on one workflow
is asked for in one query per round; rounds back off while nothing changes; a busy workflow costs
one warning per outage, not one per waiter per retry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.temporal import status_watch
from lockmaster.temporal.status_watch import StatusWatch, batched_query, shared_watch


@dataclass
class Answer:
    id: str
    state: str


@dataclass
class FakeWorkflow:
    """Answers `state[id]` for every id asked (an id not in `state` gets "pending"); raises what
    `errors` holds first, one per call."""

    state: dict[str, str] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def fetch(self, ids: list[str]) -> Mapping[str, Answer]:
        self.calls.append(list(ids))
        self.times.append(asyncio.get_running_loop().time())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            if self.errors:
                raise self.errors.pop(0)
            return {i: Answer(i, self.state.get(i, "pending")) for i in ids}
        finally:
            self.in_flight -= 1


def busy() -> RPCError:
    return RPCError("consistent query buffer is full", RPCStatusCode.RESOURCE_EXHAUSTED, b"")


def watch(fake: FakeWorkflow, **kw: Any) -> StatusWatch[Answer]:
    settings: dict[str, Any] = {"first": 0.04, "max_interval": 0.32, "join_delay": 0.01,
                                "growth": 2.0, "min_gap": 0.002, "busy_first": 0.002,
                                "busy_max": 0.01}
    return StatusWatch("nodepool/t/main", fake.fetch, **(settings | kw))


async def test_many_waiters_are_asked_for_in_one_query_per_round() -> None:
    fake = FakeWorkflow()
    w = watch(fake)
    waiters = [w.join(f"r{i}") for i in range(30)]
    answers = await asyncio.gather(*(x.next() for x in waiters))
    assert [a.id for a in answers] == [f"r{i}" for i in range(30)]
    assert fake.calls == [sorted(f"r{i}" for i in range(30))]  # one query for all 30
    for _ in range(3):
        await asyncio.gather(*(x.next() for x in waiters))
    assert len(fake.calls) == 4 and fake.most_in_flight == 1
    assert all(len(ids) == 30 for ids in fake.calls)
    for x in waiters:
        x.close()


async def test_rounds_back_off_while_nothing_changes_and_reset_on_a_change() -> None:
    fake = FakeWorkflow()
    w = watch(fake)
    with w.watch("r1") as waiter:
        intervals = []
        for _ in range(7):
            await waiter.next()
            intervals.append(round(waiter.interval, 3))
        # The first answer is news (0.01 -> 0.02, at most `first`); then unchanged: doubling to
        # the ceiling.
        assert intervals == [0.02, 0.04, 0.08, 0.16, 0.32, 0.32, 0.32]
        gaps = [b - a for a, b in zip(fake.times, fake.times[1:], strict=False)]
        assert gaps[-1] > 0.25 and gaps[0] < 0.1  # the rounds really spread out
        fake.state["r1"] = "fulfilled"
        answer = await waiter.next()
        assert answer.state == "fulfilled"
        assert waiter.interval == pytest.approx(0.04)  # changed: back to `first`
        before = fake.times[-1]
        await waiter.next()
        assert fake.times[-1] - before < 0.2


async def test_news_for_one_waiter_brings_the_others_rounds_forward() -> None:
    """A request fulfilled (and its waiter gone) means the workflow is moving: the others are
    looked at again soon, not after their backed-off interval."""
    fake = FakeWorkflow()
    w = watch(fake)
    a, b = w.join("a"), w.join("b")
    for _ in range(6):
        await asyncio.gather(a.next(), b.next())
    assert a.interval == b.interval == pytest.approx(0.32)
    fake.state["a"] = "fulfilled"
    assert (await a.next()).state == "fulfilled"
    a.close()
    assert (await b.next()).state == "pending"
    assert b.interval == pytest.approx(0.04)
    b.close()


async def test_a_new_waiter_brings_the_next_round_forward() -> None:
    fake = FakeWorkflow()
    w = watch(fake)
    old = w.join("old")
    for _ in range(6):
        await old.next()  # backed off to 0.32 s
    asked = len(fake.calls)
    start = asyncio.get_running_loop().time()
    new = w.join("new")
    await new.next()
    assert asyncio.get_running_loop().time() - start < 0.2
    assert fake.calls[asked] == ["new", "old"]  # one round for both
    old.close()
    new.close()


async def test_a_busy_workflow_costs_one_warning_per_outage(caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    caplog.set_level(logging.INFO, logger=status_watch.__name__)
    fake = FakeWorkflow(errors=[busy() for _ in range(25)])
    w = watch(fake)
    waiters = [w.join(f"r{i}") for i in range(20)]
    answers = await asyncio.wait_for(asyncio.gather(*(x.next() for x in waiters)), 10)
    assert len(answers) == 20 and len(fake.calls) == 26  # 25 refused rounds, not 25 x 20 calls
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "busy or unreachable" in warnings[0].getMessage()
    assert any("answers again" in r.getMessage() and "25 refused" in r.getMessage()
               for r in caplog.records)
    # A second outage: a second warning.
    fake.errors = [busy() for _ in range(5)]
    await asyncio.wait_for(asyncio.gather(*(x.next() for x in waiters)), 10)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    for x in waiters:
        x.close()


async def test_an_outage_past_give_up_fails_every_waiter_asked_for() -> None:
    fake = FakeWorkflow(errors=[busy() for _ in range(100000)])
    w = watch(fake, give_up=0.05)
    waiters = [w.join(f"r{i}") for i in range(3)]
    for x in waiters:
        with pytest.raises(RPCError, match="buffer is full"):
            await asyncio.wait_for(x.next(), 10)
        x.close()
    assert 1 < len(fake.calls) < 1000


async def test_another_error_goes_to_every_waiter_at_once() -> None:
    missing = RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")
    fake = FakeWorkflow(errors=[missing])
    w = watch(fake)
    waiters = [w.join(f"r{i}") for i in range(3)]
    for x in waiters:
        with pytest.raises(RPCError, match="not found"):
            await x.next()
    assert len(fake.calls) == 1


async def test_a_waiter_that_leaves_is_no_longer_asked_for() -> None:
    fake = FakeWorkflow()
    w = watch(fake)
    a, b = w.join("a"), w.join("b")
    await asyncio.gather(a.next(), b.next())
    a.close()
    asked = len(fake.calls)
    await b.next()
    await b.next()
    assert fake.calls[asked:] == [["b"], ["b"]]
    b.close()
    await asyncio.sleep(0.05)
    assert w._task is None  # nobody waits: no more rounds
    calls = len(fake.calls)
    await asyncio.sleep(0.1)
    assert len(fake.calls) == calls


async def test_a_cancelled_waiter_leaves_and_the_loop_stays_free() -> None:
    """What a cancelled build does (its request is then withdrawn by the client); meanwhile the
    event loop keeps running other tasks (the executor's heartbeats)."""
    fake = FakeWorkflow()
    w = watch(fake)
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def wait_for_ever(key: str) -> None:
        with w.watch(key) as waiter:
            while True:
                await waiter.next()

    beat = asyncio.create_task(heartbeat())
    waiting = [asyncio.create_task(wait_for_ever(k)) for k in ("a", "b")]
    await asyncio.sleep(0.3)
    waiting[0].cancel()
    await asyncio.gather(waiting[0], return_exceptions=True)
    asked = len(fake.calls)
    await asyncio.sleep(0.4)
    assert fake.calls[asked:] and all(ids == ["b"] for ids in fake.calls[asked:])
    assert ticks > 30  # ~70 expected in 0.7 s
    waiting[1].cancel()
    beat.cancel()
    await asyncio.gather(waiting[1], beat, return_exceptions=True)
    assert w.waiting == []


async def test_hurry_caps_the_interval() -> None:
    fake = FakeWorkflow()
    w = watch(fake, max_interval=5.0)
    with w.watch("r1") as waiter:
        for _ in range(8):
            await waiter.next()
        assert waiter.interval > 1
        waiter.hurry(0.02)
        asked = len(fake.calls)
        await asyncio.sleep(0.3)
        assert len(fake.calls) - asked >= 5


async def test_shared_watch_is_one_per_key_and_forgotten_when_idle() -> None:
    fake = FakeWorkflow()
    made: list[StatusWatch[Answer]] = []

    def make() -> StatusWatch[Answer]:
        made.append(watch(fake))
        return made[-1]

    first = shared_watch(("request_statuses", "pool-a"), make)
    with first.watch("x") as x:
        assert shared_watch(("request_statuses", "pool-a"), make) is first
        assert shared_watch(("request_statuses", "pool-b"), make) is not first
        await x.next()
    await asyncio.sleep(0.05)
    assert shared_watch(("request_statuses", "pool-a"), make) is not first
    assert len(made) == 3


class OldHandle:
    """A workflow whose worker predates the batched query."""

    id = "nodepool/t/main"

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def query(self, name: str, arg: Any, result_type: Any, **_: Any) -> Any:
        self.asked.append(name)
        if name == "request_statuses":
            raise WorkflowQueryFailedError(
                "Query handler for 'request_statuses' expected but not found, known queries: "
                "[request_status status]")
        return Answer(arg, "pending")


async def test_batched_query_falls_back_to_one_query_per_id_on_an_older_worker() -> None:
    handle = OldHandle()
    fetch = batched_query(handle, "request_statuses", "request_status",  # type: ignore[arg-type]
                          lambda i: i, Answer, object)  # type: ignore[arg-type]
    assert await fetch(["a", "b"]) == {"a": Answer("a", "pending"), "b": Answer("b", "pending")}
    assert await fetch(["a"]) == {"a": Answer("a", "pending")}
    assert handle.asked == ["request_statuses", "request_status", "request_status",
                            "request_status"]  # the batched one tried once
