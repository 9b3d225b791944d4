"""Zuul's timeout semantics (issue 14): waiting for nodes and TEs is not the job's timeout, every
phase has its own bound, the build activity's limit is above all of them, and a build that runs
into that limit is TIMED_OUT, never rerun."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ActivityError, ApplicationError, RetryState, TimeoutType
from temporalio.exceptions import TimeoutError as TemporalTimeout
from temporalio.worker import Worker

from lockmaster.config.layout import JobConfig
from lockmaster.execution import build_limits
from lockmaster.execution.build_limits import (
    ARTIFACTS,
    BUILD_RETRY,
    NODE_WAIT,
    POST_RUN,
    TE_WAIT,
    BuildLimits,
    activity_timeout,
    classify_activity_failure,
)
from lockmaster.execution.runner import BuildRunner
from lockmaster.model.build import BuildRequest, BuildResult, JobSpec, Result
from lockmaster.model.check import CheckInput, CheckOutcome
from lockmaster.model.nodes import NodeRequest
from lockmaster.model.report import ReportRequest, ReportResult
from lockmaster.model.state import PrepareStateRequest, PrepareStateResult
from lockmaster.model.testenv import (
    LeaseState,
    LeaseStatus,
    OperatorAnswer,
    TENetwork,
    TENode,
    TESpec,
)
from lockmaster.nodepool.allocator import request_order
from lockmaster.nodes.base import Nodeset, NodeSource
from lockmaster.workflows.check import CheckWorkflow
from tests.test_build_runner import Env, change, request
from tests.test_build_runner import request as build_request

SMALL = BuildLimits(node_wait=5.0, te_wait=5.0, post_run=0.6, artifacts=0.6, cleanup=2.0,
                    slack=1.0)


def job(**fields: Any) -> JobSpec:
    return JobSpec.model_validate({"name": "unit", "run": "true", **fields})


# --- the activity's limit ---------------------------------------------------------------------


@pytest.mark.parametrize("spec", [
    {}, {"timeout": 1}, {"timeout": 7200}, {"node_wait_timeout": 60},
    {"testenv": "default"}, {"testenv": "default", "te_wait_timeout": 3600},
    {"testenv": "default", "timeout_includes_te_wait": True},
])
def test_activity_timeout_exceeds_every_internal_bound(spec: dict[str, Any]) -> None:
    j = job(**spec)
    node_wait = j.node_wait_timeout or NODE_WAIT
    te_wait = (j.te_wait_timeout or TE_WAIT) if j.testenv and not j.timeout_includes_te_wait \
        else 0.0
    inside = node_wait + te_wait + j.timeout + min(j.timeout, POST_RUN) + ARTIFACTS
    limit = activity_timeout(j).total_seconds()
    assert limit > inside  # `timeout + 300` was not: post-run and artifacts alone take 1200 s


def test_activity_timeout_follows_the_runner_limits() -> None:
    j = job(timeout=0.5)
    assert activity_timeout(j, SMALL) > timedelta(seconds=5.0 + 0.5 + 0.5 + 0.6)
    assert activity_timeout(j, SMALL) < timedelta(seconds=30)


# --- classifying what Temporal says -----------------------------------------------------------


def activity_error(cause: BaseException) -> ActivityError:
    error = ActivityError("activity error", scheduled_event_id=5, started_event_id=6,
                          identity="executor", activity_type="run_build", activity_id="1",
                          retry_state=RetryState.NON_RETRYABLE_FAILURE)
    error.__cause__ = cause
    return error


def test_start_to_close_is_timed_out() -> None:
    failure = classify_activity_failure(activity_error(
        TemporalTimeout("activity StartToClose timeout", type=TimeoutType.START_TO_CLOSE,
                        last_heartbeat_details=[])))
    assert failure.result is Result.TIMED_OUT
    assert "timed out" in failure.message
    result, _ = classify_activity_failure(activity_error(
        TemporalTimeout("x", type=TimeoutType.SCHEDULE_TO_CLOSE, last_heartbeat_details=[])))
    assert result is Result.TIMED_OUT


def test_heartbeat_timeout_and_errors_are_retry() -> None:
    failure = classify_activity_failure(activity_error(
        TemporalTimeout("activity Heartbeat timeout", type=TimeoutType.HEARTBEAT,
                        last_heartbeat_details=[])))
    assert failure.result is Result.RETRY and "executor lost" in failure.message
    failure = classify_activity_failure(activity_error(ApplicationError("boom")))
    assert failure.result is Result.RETRY and "boom" in failure.message


def test_start_to_close_is_not_retried_by_the_server() -> None:
    assert "TemporalTimeout:StartToClose" in BUILD_RETRY.non_retryable_error_types


# --- the job's keys ---------------------------------------------------------------------------


def test_job_keys_parse_and_freeze() -> None:
    from lockmaster.pipelines import freeze

    config = JobConfig.model_validate({
        "name": "devtest", "run": "true", "testenv": "default", "node-wait-timeout": 3600,
        "te-wait-timeout": 7200, "timeout-includes-te-wait": True})
    assert (config.node_wait_timeout, config.te_wait_timeout) == (3600, 7200)
    assert config.timeout_includes_te_wait

    class Config:
        def job(self, name: str) -> JobConfig:
            return config

    spec = freeze.freeze_job(Config(), "devtest")  # type: ignore[arg-type]
    assert (spec.node_wait_timeout, spec.te_wait_timeout, spec.timeout_includes_te_wait) == (
        3600, 7200, True)
    with pytest.raises(ValueError):
        JobConfig.model_validate({"name": "x", "run": "true", "node-wait-timeout": 0})


# --- the runner -------------------------------------------------------------------------------


class SlowNodes:
    """Nodes from `inner` after `delay` seconds (None: never); downloads take `download` s."""

    def __init__(self, inner: NodeSource, delay: float | None = 0.0,
                 download: float | None = None) -> None:
        self.inner = inner
        self.delay = delay
        self.download = download
        self.asked: list[dict[str, Any]] = []
        self.cancelled = False

    async def acquire_nodeset(self, labels: list[str], request_id: str,
                              **kwargs: Any) -> Nodeset:
        self.asked.append({"id": request_id, **kwargs})
        try:
            await asyncio.sleep(self.delay if self.delay is not None else 3600)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        kwargs.pop("arrived", None)
        nodeset = await self.inner.acquire_nodeset(labels, request_id, **kwargs)
        if self.download is not None:
            for node in nodeset.nodes:
                node.download = self._slow(node.download)  # type: ignore[method-assign]
        return nodeset

    def _slow(self, download: Any) -> Any:
        async def slow(*args: Any, **kwargs: Any) -> int:
            assert self.download is not None
            await asyncio.sleep(self.download)
            return int(await download(*args, **kwargs))
        return slow

    async def release_nodeset(self, nodeset: Nodeset, **kwargs: Any) -> None:
        await self.inner.release_nodeset(nodeset, **kwargs)

    async def autohold_until(self, *args: Any) -> None:
        return None


def te_spec() -> TESpec:
    return TESpec(host="h1", name="te1", env_number=1, libvirt_uri="test:///default",
                  host_address="127.0.0.1", host_key="ssh-ed25519 AAAA", ssh_user="te",
                  seed=TENode(name="seed", mac="52:54:00:00:00:01"), seed_ip="192.0.2.1",
                  nodes=[], bridge="brbm1",
                  network=TENetwork(cidr="192.0.2.0/24", gateway="192.0.2.254",
                                    range_start="192.0.2.10", range_end="192.0.2.20"))


class SlowTE:
    """A TE lease granted after `delay` seconds (None: never)."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self.released = False

    async def acquire(self) -> LeaseStatus:
        try:
            await asyncio.sleep(self.delay if self.delay is not None else 3600)
        except asyncio.CancelledError:
            self.released = True  # as TEHolder does: a cancelled wait gives the request back
            raise
        return LeaseStatus(id="l1", state=LeaseState.GRANTED, te=te_spec(), generation=1)

    def write_datafile(self, path: Path) -> Path:
        path.write_text("{}\n")
        return path

    async def release(self) -> OperatorAnswer:
        self.released = True
        return OperatorAnswer(ok=True, message="released")


def runner(env: Env, nodes: SlowNodes, te: SlowTE | None = None,
           limits: BuildLimits = SMALL) -> BuildRunner:
    return BuildRunner(
        nodes, env.preparer, env.tmp / "logs", "http://logs.example.org/", env.tmp / "work",
        heartbeat_interval=0.05, limits=limits,
        testenvs=(lambda label, lease_id, holder, precedence: te) if te else None,
    )


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


async def test_timed_out_job_with_slow_collection_answers_within_the_activity_limit(
        env: Env) -> None:
    """Run, post-run and the artifact download all hang: each is cut at its own bound, the
    result is TIMED_OUT, and the runner answers before the activity's limit."""
    nodes = SlowNodes(env.runner.providers, delay=0.2, download=3600)
    req = request(run="sleep 30", post_run=["sleep 30"], timeout=0.5)
    began = time.monotonic()
    result = await runner(env, nodes).run(req)
    took = time.monotonic() - began
    assert result.result is Result.TIMED_OUT, env.log()
    lines = env.lines()
    assert "--- post-run 1 timed out; remaining post-run commands skipped" in lines
    assert "Artifacts not collected: the download took more than 0.6 s" in lines
    assert took >= 0.5 + 0.5 + 0.6
    assert took < activity_timeout(req.job, SMALL).total_seconds()
    assert env.all_released()


async def test_node_wait_is_not_the_job_timeout(env: Env) -> None:
    nodes = SlowNodes(env.runner.providers, delay=0.8)
    result = await runner(env, nodes).run(request(timeout=0.5))
    assert result.result is Result.SUCCESS, env.log()


async def test_node_wait_timeout_is_node_failure(env: Env) -> None:
    nodes = SlowNodes(env.runner.providers, delay=None)
    began = time.monotonic()
    result = await runner(env, nodes).run(request(node_wait_timeout=0.3))
    assert time.monotonic() - began < 3
    assert result.result is Result.NODE_FAILURE
    assert result.message == "no nodes within 0.3 s (the job's node-wait-timeout)"
    assert f"NODE_FAILURE: {result.message}" in env.lines()
    assert nodes.cancelled  # the request was withdrawn

    # Without the job's own bound, the executor's backstop applies.
    nodes = SlowNodes(env.runner.providers, delay=None)
    result = await runner(env, nodes, limits=BuildLimits(node_wait=0.2)).run(request())
    assert result.result is Result.NODE_FAILURE
    assert result.message == "no nodes within 0.2 s (the executor's limit)"


async def test_te_wait_longer_than_the_job_timeout_still_runs_the_job(env: Env) -> None:
    te = SlowTE(delay=1.0)
    nodes = SlowNodes(env.runner.providers)
    result = await runner(env, nodes, te).run(
        request(run='test -f "$TE_DATAFILE" && sleep 0.2', testenv="default", timeout=0.8))
    assert result.result is Result.SUCCESS, env.log()
    assert te.released and env.all_released()


async def test_te_wait_counts_against_the_timeout_when_the_job_says_so(env: Env) -> None:
    te = SlowTE(delay=None)
    nodes = SlowNodes(env.runner.providers)
    result = await runner(env, nodes, te).run(
        request(testenv="default", timeout=0.3, timeout_includes_te_wait=True))
    assert result.result is Result.TIMED_OUT, env.log()
    assert "TIMED_OUT: no TE with label 'default' within the job's timeout of 0.3 s" in \
        env.lines()
    assert te.released and env.all_released()


async def test_te_wait_timeout_is_node_failure(env: Env) -> None:
    te = SlowTE(delay=None)
    nodes = SlowNodes(env.runner.providers)
    result = await runner(env, nodes, te).run(
        request(testenv="default", te_wait_timeout=0.3, run="touch ran"))
    assert result.result is Result.NODE_FAILURE, env.log()
    assert result.message == ("no test environment with label 'default' within 0.3 s "
                              "(the job's te-wait-timeout)")
    assert te.released and env.all_released()
    assert "--- run: touch ran" not in env.lines()


async def test_a_retried_try_keeps_its_place_in_the_pool_queue(env: Env) -> None:
    nodes = SlowNodes(env.runner.providers)
    result = await runner(env, nodes).run(request(), try_number=2, first_asked=1000.0)
    assert result.result is Result.SUCCESS, env.log()
    assert nodes.asked[0]["id"] == "b1.2" and nodes.asked[0]["arrived"] == 1000.0
    nodes = SlowNodes(env.runner.providers)
    await runner(env, nodes).run(request(), first_asked=1000.0)
    assert nodes.asked[0]["id"] == "b1" and nodes.asked[0].get("arrived") is None


def test_allocator_keeps_an_earlier_arrival() -> None:
    from lockmaster.model.nodes import PoolSpec, PoolState
    from lockmaster.nodepool.allocator import Allocator

    spec = PoolSpec.model_validate({"provider": "local", "pool": "p", "driver": "local",
                                    "labels": {"local": {"name": "local"}}, "max_servers": 1})
    alloc = Allocator(spec, PoolState())
    first = alloc.submit(NodeRequest(id="a", labels=["local"]), now=100.0)
    retried = alloc.submit(NodeRequest(id="b.2", labels=["local"], arrived=50.0), now=200.0)
    future = alloc.submit(NodeRequest(id="c", labels=["local"], arrived=900.0), now=300.0)
    assert (first.arrived, retried.arrived, future.arrived) == (100.0, 50.0, 300.0)
    assert sorted([first, retried, future], key=request_order)[0].id == "b.2"


# --- the workflows --------------------------------------------------------------------------


@activity.defn(name="run_build")
async def stuck_build(request: BuildRequest) -> BuildResult:
    """An executor stuck beyond every bound, still heartbeating (so only the limit ends it)."""
    STARTED.append(request.build_id)
    while True:
        activity.heartbeat("stuck")
        await asyncio.sleep(0.1)


@activity.defn(name="prepare_state")
async def prepare_state(request: PrepareStateRequest) -> PrepareStateResult:
    return PrepareStateResult(ok=True, state=build_request().state)


@activity.defn(name="post_report")
async def post_report(report: ReportRequest) -> ReportResult:
    return ReportResult(posted=True)


STARTED: list[str] = []
TINY = BuildLimits(node_wait=0.3, te_wait=0.3, post_run=0.2, artifacts=0.2, cleanup=0.1,
                   slack=0.2)


async def test_check_with_a_build_past_its_activity_limit_is_timed_out_not_rerun(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the dev server, with the executors' limits shrunk so the activity's is ~1.5 s: one
    activity attempt, one build, TIMED_OUT (today: three attempts of three tries, RETRY_LIMIT)."""
    monkeypatch.setattr(build_limits, "LIMITS", TINY)
    STARTED.clear()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    slow = job(name="slow", timeout=0.5)
    assert activity_timeout(slow) < timedelta(seconds=2)
    async with Worker(client, task_queue=f"{prefix}-orchestrator", workflows=[CheckWorkflow],
                      activities=[prepare_state, post_report]), \
            Worker(client, task_queue=f"{prefix}-executor", activities=[stuck_build]):
        began = time.monotonic()
        outcome = await client.execute_workflow(
            CheckWorkflow.run,
            CheckInput(change=change(), pipeline="check", jobs=[slow], task_queue_prefix=prefix,
                       ignore_dependencies=True, build_heartbeat_timeout=1.0),
            id=f"check-{prefix}", task_queue=f"{prefix}-orchestrator", result_type=CheckOutcome)
    assert outcome.job_results == {"slow": Result.TIMED_OUT}
    assert [(b.result, b.message) for b in outcome.builds] == [
        (Result.TIMED_OUT, "timed out: the build did not answer within its limit")]
    assert len(STARTED) == 1  # neither the server nor the workflow ran it again
    assert time.monotonic() - began < 10
