"""The build activity: runs one attempt of one job on a node (executor role)."""

from __future__ import annotations

from temporalio import activity

from lockmaster.execution.runner import BuildRunner
from lockmaster.metrics import observe
from lockmaster.metrics.domain import domain
from lockmaster.model.build import BuildRequest, BuildResult
from lockmaster.temporal.heartbeat import heartbeating
from lockmaster.temporal.outliving import outliving


class ExecutorActivities:
    def __init__(self, runner: BuildRunner, heartbeat_interval: float = 2.0) -> None:
        self.runner = runner
        self.heartbeat_interval = heartbeat_interval

    @activity.defn(name="run_build")
    async def run_build(self, request: BuildRequest) -> BuildResult:
        """Heartbeats throughout, so a dead worker is noticed within the heartbeat timeout (and
        the build runs again elsewhere) and a cancelled check reaches the running command. A
        gate's build outlives the queue's run that asked for it (temporal/outliving.py)."""
        result = await outliving(self._run(request))
        # Builds by result and job durations (docs/metrics.md): counted where the build ran.
        observe(domain().observe_build, request.pipeline, request.job.name,
                str(result.result), result.duration)
        return result

    async def _run(self, request: BuildRequest) -> BuildResult:
        info = activity.info()
        async with heartbeating("running", every=self.heartbeat_interval) as beat:
            return await self.runner.run(
                request, heartbeat=beat, try_number=info.attempt,
                # When the first try was scheduled: a retry keeps its place in the pool's queue.
                first_asked=info.scheduled_time.timestamp(),
            )
