"""Where the web service's data comes from: the workflows' own `status` queries (through the same
starters `lockmaster status`, `nodes list`, `te list` and `publish` use) and the results
database. Handlers call these and hand the answers to the pure views.

Temporal unreachable: `TemporalDown`, which the handlers turn into 503 with the address and
what to do; the server stays up and connects again on a later request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.service import RPCError

from lockmaster.leases.specs import broker_id, te_specs
from lockmaster.model.nodes import PoolStatus, PoolStatusQuery
from lockmaster.model.publish import PublishStatus, PublishStatusQuery
from lockmaster.model.publish import QueueStatus as PublishQueueStatus
from lockmaster.model.publish import QueueStatusQuery as PublishQueueQuery
from lockmaster.model.testenv import BrokerStatus, BrokerStatusQuery
from lockmaster.nodepool.specs import pool_id, pool_specs
from lockmaster.starters.publish import queue_workflow_id
from lockmaster.starters.status import PipelineStatus, collect
from lockmaster.temporal.client import connect
from lockmaster.web.context import WebContext
from lockmaster.web.status_view import Estimates

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECT_TIMEOUT = 5.0  # a page must not hang on a Temporal that does not answer
QUERY_TIMEOUT = 10.0
# The status page polls every 2 s: a queue whose worker is down is "not answering" after this,
# rather than holding every viewer for `lockmaster status`'s 10 s.
PAGE_QUERY_TIMEOUT = 3.0
ASK_AGAIN = 20.0
RETRY_CONNECT = 5.0  # seconds between attempts to connect again while Temporal is down
RECENT_PUBLICATIONS = 10


class TemporalDown(Exception):
    """Temporal cannot be reached; the message says where and how to fix it."""


# Every viewer polls every 2 s: the workflows are asked at most once a second, whatever the
# number of viewers; those asking meanwhile share the answer.
SHARED_SECONDS = 1.0


async def shared(ctx: WebContext, name: str, fetch: Callable[[], Awaitable[T]]) -> T:
    lock = ctx.cache.setdefault(f"lock:{name}", asyncio.Lock())
    async with lock:
        hit = ctx.cache.get(f"answer:{name}")
        if hit is not None and time.monotonic() - hit[0] < SHARED_SECONDS:
            return hit[1]
        value = await fetch()
        ctx.cache[f"answer:{name}"] = (time.monotonic(), value)
        return value


async def client_of(ctx: WebContext) -> Client:
    """The context's client, connecting (again) when there is none."""
    if ctx.client is not None:
        return ctx.client
    address = ctx.config.temporal.address
    last = ctx.cache.get("temporal-tried", -RETRY_CONNECT)
    if time.monotonic() - last < RETRY_CONNECT:
        raise TemporalDown(_down_message(ctx, "not answering"))
    ctx.cache["temporal-tried"] = time.monotonic()
    try:
        ctx.client = await asyncio.wait_for(connect(ctx.config), CONNECT_TIMEOUT)
    except (TimeoutError, RuntimeError, OSError, RPCError) as exc:
        raise TemporalDown(_down_message(ctx, str(exc) or type(exc).__name__)) from exc
    log.info("connected to Temporal at %s", address)
    return ctx.client


def _down_message(ctx: WebContext, why: str) -> str:
    return (f"Temporal at {ctx.config.temporal.address} is not reachable ({why}); the status "
            "shows again once it is (start it: lockmaster run, or the Temporal service)")


def _is_down(exc: BaseException) -> bool:
    """An RPC error that means the server is gone, not that one workflow is missing."""
    if isinstance(exc, RPCError):
        return exc.status.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN")
    return isinstance(exc, (TimeoutError, OSError, RuntimeError))


async def pipelines(ctx: WebContext) -> list[PipelineStatus]:
    return await shared(ctx, "pipelines", lambda: _pipelines(ctx))


async def _pipelines(ctx: WebContext) -> list[PipelineStatus]:
    """A workflow that does not answer within PAGE_QUERY_TIMEOUT (its worker down) is listed
    as not answering by `collect`; it must not turn the whole status into an error."""
    client = await client_of(ctx)
    # Workflows that did not answer (their worker down) are asked again every ASK_AGAIN
    # seconds, not on every refresh: each would hold every refresh for its timeout.
    quiet: dict[str, tuple[float, str]] = ctx.cache.setdefault("not-answering", {})
    now = time.monotonic()
    skip = {wid: why for wid, (since, why) in quiet.items() if now - since < ASK_AGAIN}
    try:
        found = await collect(client, ctx.config, timeout=PAGE_QUERY_TIMEOUT, skip=skip)
    except Exception as exc:
        if _is_down(exc):
            raise TemporalDown(_down_message(ctx, str(exc) or type(exc).__name__)) from exc
        raise
    for wid in [wid for wid in quiet if wid not in skip]:  # asked again: answered, or re-added
        del quiet[wid]
    for p in found:
        for line in p.unanswered:
            wid, _, why = line.partition(": ")
            if wid not in skip:
                quiet[wid] = (now, why)
    return found


async def _query(client: Client, workflow_id: str, arg: Any, result_type: type) -> Any:
    return await client.get_workflow_handle(workflow_id).query(
        "status", arg, result_type=result_type,
        rpc_timeout=timedelta(seconds=PAGE_QUERY_TIMEOUT))


async def pools(ctx: WebContext) -> tuple[list[PoolStatus], dict[str, str]]:
    """Every configured pool's status; a pool that does not answer is named with why."""
    return await shared(ctx, "pools", lambda: _pools(ctx))


async def _pools(ctx: WebContext) -> tuple[list[PoolStatus], dict[str, str]]:
    client = await client_of(ctx)
    prefix = ctx.config.temporal.workflow_id_prefix
    specs = pool_specs(ctx.config)
    answers = await asyncio.gather(*(
        _query(client, prefix + pool_id(s.provider, s.pool), PoolStatusQuery(), PoolStatus)
        for s in specs), return_exceptions=True)
    found, errors = [], {}
    for spec, answer in zip(specs, answers, strict=True):
        if isinstance(answer, BaseException):
            if _is_down(answer) and not isinstance(answer, RPCError):
                raise TemporalDown(_down_message(ctx, str(answer)))
            errors[f"{spec.provider}/{spec.pool}"] = str(answer) or type(answer).__name__
        else:
            found.append(answer)
    return found, errors


async def brokers(ctx: WebContext) -> tuple[list[BrokerStatus], dict[str, str]]:
    return await shared(ctx, "brokers", lambda: _brokers(ctx))


async def _brokers(ctx: WebContext) -> tuple[list[BrokerStatus], dict[str, str]]:
    client = await client_of(ctx)
    prefix = ctx.config.temporal.workflow_id_prefix
    labels = sorted(te_specs(ctx.config))
    answers = await asyncio.gather(*(
        _query(client, prefix + broker_id(label), BrokerStatusQuery(), BrokerStatus)
        for label in labels), return_exceptions=True)
    found, errors = [], {}
    for label, answer in zip(labels, answers, strict=True):
        if isinstance(answer, BaseException):
            errors[label] = str(answer) or type(answer).__name__
        else:
            found.append(answer)
    return found, errors


async def publications(ctx: WebContext) -> tuple[PublishQueueStatus | None,
                                                 list[tuple[str, PublishStatus | str]]]:
    """The publish queue and the most recent publications' own status (steps, mirror syncs);
    a publication whose workflow no longer answers is given as the error text."""
    client = await client_of(ctx)
    try:
        queue = await _query(client, queue_workflow_id(ctx.config), PublishQueueQuery(),
                             PublishQueueStatus)
    except RPCError as exc:
        if exc.status.name == "NOT_FOUND":
            return None, []
        raise TemporalDown(_down_message(ctx, str(exc))) from exc
    recent = sorted(queue.entries, key=lambda e: e.sequence)[-RECENT_PUBLICATIONS:]
    answers = await asyncio.gather(*(
        _query(client, e.workflow_id, PublishStatusQuery(), PublishStatus) for e in recent),
        return_exceptions=True)
    out: list[tuple[str, PublishStatus | str]] = []
    for entry, answer in zip(recent, answers, strict=True):
        out.append((entry.workflow_id, answer if not isinstance(answer, BaseException)
                    else (str(answer) or type(answer).__name__)))
    return queue, out


ESTIMATES_TTL = 30.0  # the status page polls every 2 s; durations change per build, not per poll
_estimates_cache: dict[tuple[int, frozenset], tuple[float, Estimates]] = {}


async def estimates(ctx: WebContext, found: list[PipelineStatus]) -> Estimates:
    """Recent job durations (per project and pipeline) and each gate queue's reset rate, from
    the results database when there is one and it answers; otherwise none (the queues' own
    averages still apply). Remembered for ESTIMATES_TTL seconds."""
    if ctx.results is None:
        return Estimates()
    wanted: dict[tuple[str, str], set[str]] = {}
    gates: set[tuple[str, str]] = set()
    for p in found:
        for queue in p.queues:
            gates.add((queue.pipeline, queue.queue))
            for item in queue.items:
                wanted.setdefault((item.project, queue.pipeline), set()).update(
                    j.name for j in item.jobs)
        for check in p.checks:
            wanted.setdefault((check.change.project, check.pipeline), set()).update(
                j.name for j in check.jobs)
    key = (id(ctx.results), frozenset((k, frozenset(v)) for k, v in wanted.items())
           | frozenset(gates))
    cached = _estimates_cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < ESTIMATES_TTL:
        return cached[1]
    try:
        result = await asyncio.to_thread(_read_estimates, ctx.results, wanted, gates)
    except Exception as exc:  # the database down costs the estimates, not the page
        # Remembered like an answer: said once per ESTIMATES_TTL, not on every refresh.
        log.warning("results database: no estimates for %gs (%s)", ESTIMATES_TTL, exc)
        result = Estimates()
    if len(_estimates_cache) > 64:
        _estimates_cache.clear()
    _estimates_cache[key] = (time.monotonic(), result)
    return result


def _read_estimates(db: Any, wanted: dict[tuple[str, str], set[str]],
                    gates: set[tuple[str, str]]) -> Estimates:
    from lockmaster.results import queries

    durations = {(project, pipeline): queries.recent_job_durations(db, project, pipeline,
                                                                   sorted(jobs))
                 for (project, pipeline), jobs in wanted.items()}
    rates = {}
    for pipeline, queue in gates:
        rate = queries.reset_rate(db, pipeline, queue)
        if rate.items:  # no finished items: no rate, rather than a rate of 0
            rates[queue] = rate.rate
    return Estimates(job_seconds=durations, reset_rates=rates, source="results")
