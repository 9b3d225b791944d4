"""A minimal long-lived workflow for tests/test_outliving.py: it hands out work that outlives
its run and continues as new every few events, as the gate does with its builds."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from pydantic import Field
from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from lockmaster.model.base import Model
    from lockmaster.model.work import Work, WorkDone, WorkOptions
    from lockmaster.temporal.outliving import outliving
    from lockmaster.workflows.longlived import LongLivedWorkflow, WorkTracker

TASK_QUEUE = "outliving-probe"


class ProbeInput(Model):
    work: dict[str, Work] = Field(default_factory=dict)
    results: dict[str, WorkDone] = Field(default_factory=dict)
    # Seconds each new piece of work takes (by key), handed out by the first run.
    hand_out: dict[str, float] = Field(default_factory=dict)
    max_history_events: int = 20
    heartbeat: float = 1.0


class Cancel(Model):
    key: str


class Results(Model):
    results: dict[str, WorkDone]
    in_flight: list[str]


@workflow.defn(name="OutlivingProbeWorkflow")
class OutlivingProbeWorkflow(LongLivedWorkflow):
    @workflow.init
    def __init__(self, inp: ProbeInput) -> None:
        self._inp = inp
        self._work = WorkTracker(inp.work, self._wake)
        self._work.on("probe", self._done)

    def _done(self, work: Work, done: WorkDone) -> None:
        self._inp.results[work.key] = done

    @workflow.signal
    def cancel(self, request: Cancel) -> None:
        self._work.cancel(request.key)

    @workflow.query
    def results(self) -> Results:
        return Results(results=self._inp.results, in_flight=sorted(self._inp.work))

    @workflow.run
    async def run(self, inp: ProbeInput) -> None:
        self._work.resume()
        for key, seconds in inp.hand_out.items():
            self._work.submit(Work(
                key=key, kind="probe", activity="probe_work", outlives_run=True,
                arg={"key": key, "seconds": seconds},
                options=WorkOptions(task_queue=TASK_QUEUE, start_to_close=300,
                                    heartbeat=inp.heartbeat, maximum_attempts=1)))
        inp.hand_out = {}
        while True:
            await self._continue_when_due(inp, inp.max_history_events, legacy=False, tasks=set())
            # A timer keeps the history growing, so the runs keep continuing as new.
            await self._sleep(timedelta(seconds=0.3), self._continuing)


class ProbeActivities:
    """Counts what each key's activity did, in this process."""

    def __init__(self) -> None:
        self.started: dict[str, int] = {}
        self.finished: dict[str, int] = {}
        self.cancelled: dict[str, int] = {}

    @activity.defn(name="probe_work")
    async def probe_work(self, arg: dict[str, Any]) -> dict[str, Any]:
        return await outliving(self._body(arg))

    async def _body(self, arg: dict[str, Any]) -> dict[str, Any]:
        key = arg["key"]
        self.started[key] = self.started.get(key, 0) + 1
        try:
            deadline = asyncio.get_running_loop().time() + arg["seconds"]
            while asyncio.get_running_loop().time() < deadline:
                activity.heartbeat()
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            self.cancelled[key] = self.cancelled.get(key, 0) + 1
            raise
        self.finished[key] = self.finished.get(key, 0) + 1
        return {"key": key, "answer": 42}


async def _serve(target: str) -> None:
    """An executor in its own process (the test kills it): prints each start."""
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Worker

    class Loud(ProbeActivities):
        async def _body(self, arg: dict[str, Any]) -> dict[str, Any]:
            print(f"started {arg['key']}", flush=True)
            return await super()._body(arg)

    client = await Client.connect(target, data_converter=pydantic_data_converter)
    probe = Loud()
    async with Worker(client, task_queue=TASK_QUEUE, activities=[probe.probe_work]):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    import sys

    asyncio.run(_serve(sys.argv[1]))
