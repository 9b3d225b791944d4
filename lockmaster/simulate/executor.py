"""The simulated executor: `run_build` on the executor task queue, in place of nodes and jobs.

A build takes its job's duration (scenario `durations`, times the time scale), heartbeating so a
cancellation reaches it at once, and returns what the scenario's outcomes say (SUCCESS
otherwise; TIMED_OUT after the job's `timeout` when its duration is longer). Every build that
starts is recorded, with times in scenario time, and listed with the result it returned: a job
that keeps returning RETRY shows its attempts as RETRY builds, and the RETRY_LIMIT it ends with
is in its report line.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.build import BuildRequest, BuildResult, Result
from lockmaster.simulate.clock import Clock
from lockmaster.simulate.scenario import JobOutcome, Scenario
from lockmaster.temporal.outliving import outliving
from lockmaster.temporal.task_queues import Role, task_queue

# Seconds between heartbeats: how quickly a cancelled build notices. Each is a call to the
# Temporal server: with 16 builds running (2 approvals a second, bench/gate_throughput.py) the
# default costs the dev server ~8 CPU-seconds a minute, a third of its CPU. Real executors
# heartbeat every 2 s (workers/executor.py); the benchmark passes `heartbeat` to be closer.
HEARTBEAT = 0.1


@dataclass
class BuildRecord:
    build_id: str
    pipeline: str
    job: str
    number: int  # the item's change
    patchset: int
    changes: str  # speculative state, `N,P N,P`
    attempt: int
    started: float
    ended: float | None = None
    result: Result | None = None  # None while running


class SimulatedExecutor:
    def __init__(self, scenario: Scenario, clock: Clock, *, time_scale: float = 1.0,
                 logs_url: str = "", heartbeat: float = HEARTBEAT) -> None:
        if heartbeat <= 0:
            raise ValueError("heartbeat must be > 0")
        self.heartbeat = heartbeat
        self.scenario = scenario
        self.clock = clock
        self.time_scale = time_scale
        self.logs_url = logs_url.rstrip("/")
        self.numbers = scenario.numbers()
        self.builds: list[BuildRecord] = []

    def scripted(self, request: BuildRequest) -> Result:
        """The first outcome for this job whose change is in the build's speculative state."""
        state = {c.number: c.patchset for c in request.state.changes}
        for outcome in self.scenario.job_outcomes():
            if self._applies(outcome, request, state):
                return Result(outcome.result)
        return Result.SUCCESS

    def _applies(self, outcome: JobOutcome, request: BuildRequest, state: dict[int, int]) -> bool:
        number = self.numbers[outcome.change]
        return (
            outcome.job == request.job.name
            and number in state
            and outcome.pipeline in (None, request.pipeline)
            and outcome.patchset in (None, state[number])
            and outcome.attempt in (None, request.attempt)
        )

    @activity.defn(name="run_build")
    async def run_build(self, request: BuildRequest) -> BuildResult:
        # As the real executor's: a gate's build outlives the queue's run that asked for it.
        return await outliving(self._run(request))

    async def _run(self, request: BuildRequest) -> BuildResult:
        result = self.scripted(request)
        record = BuildRecord(
            build_id=request.build_id, pipeline=request.pipeline, job=request.job.name,
            number=request.change.number, patchset=request.change.patchset,
            changes=request.state.changes_key(), attempt=request.attempt,
            started=self.clock.now(),
        )
        self.builds.append(record)
        started = time.time()
        duration = self.scenario.duration(request.job.name)
        if duration > request.job.timeout:  # as the real runner: the job's timeout ends it
            duration, result = request.job.timeout, Result.TIMED_OUT
        try:
            await self._take(duration * self.time_scale)
        except asyncio.CancelledError:
            record.result, record.ended = Result.ABORTED, self.clock.now()
            raise
        # The last attempt a job may have ends it: recorded as RETRY_LIMIT (the spec; Zuul's
        # build history), while the workflow is answered RETRY as by any executor.
        recorded = result
        if result is Result.RETRY and request.attempt >= request.job.attempts:
            recorded = Result.RETRY_LIMIT
        record.result, record.ended = recorded, self.clock.now()
        return BuildResult(
            build_id=request.build_id, job=request.job.name, result=result,
            attempt=request.attempt, started=started, ended=time.time(),
            log_url=f"{self.logs_url}/{request.log_path}/" if self.logs_url else None,
        )

    async def _take(self, seconds: float) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            activity.heartbeat()
            await asyncio.sleep(min(left, self.heartbeat))


def simulated_executor_worker(
    client: Client, config: LockmasterConfig, executor: SimulatedExecutor
) -> Worker:
    interval = timedelta(seconds=executor.heartbeat)
    return Worker(
        client,
        task_queue=task_queue(config.temporal.task_queue_prefix, Role.EXECUTOR),
        activities=[executor.run_build],
        max_concurrent_activities=1000,
        max_heartbeat_throttle_interval=interval,
        default_heartbeat_throttle_interval=interval,
    )
