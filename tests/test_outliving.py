"""Work that outlives the run that asked for it (temporal/outliving.py, WorkTracker): the gate's
builds are activities of the queue's current run; when the run continues as new first, the
result reaches the next run by signal, the build is not run again, a build whose executor dies
meanwhile is declared lost (and the queue runs it again), and a cancelled one stops.

Real Temporal dev server; the probe workflow (tests/outliving_probe.py) continues as new every
few events while its work runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from lockmaster.model.work import WorkAlive, WorkWanted
from lockmaster.temporal.outliving import started_activities
from tests.outliving_probe import (
    TASK_QUEUE,
    Cancel,
    OutlivingProbeWorkflow,
    ProbeActivities,
    ProbeInput,
    Results,
)

WORKFLOW_QUEUE = "outliving-probe-workflows"


@contextlib.asynccontextmanager
async def workflow_worker(client: Client) -> AsyncIterator[None]:
    async with Worker(client, task_queue=WORKFLOW_QUEUE, workflows=[OutlivingProbeWorkflow],
                      activities=[started_activities]):
        yield


def activity_worker(client: Client, probe: ProbeActivities) -> Worker:
    return Worker(client, task_queue=TASK_QUEUE, activities=[probe.probe_work])


async def start(client: Client, hand_out: dict[str, float]) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        OutlivingProbeWorkflow.run, ProbeInput(hand_out=hand_out),
        id=f"probe/{uuid.uuid4().hex[:8]}", task_queue=WORKFLOW_QUEUE)


async def runs(client: Client, workflow_id: str) -> int:
    return len([w async for w in client.list_workflows(f'WorkflowId = "{workflow_id}"')])


async def until(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def results(handle: WorkflowHandle[Any, Any]) -> Results:
    for _ in range(50):  # a query may meet the workflow between two runs
        with contextlib.suppress(Exception):
            return await handle.query(OutlivingProbeWorkflow.results)
        await asyncio.sleep(0.1)
    raise AssertionError("the probe does not answer queries")


async def test_a_result_reaches_the_next_run_and_the_work_runs_once(client: Client) -> None:
    probe = ProbeActivities()
    async with workflow_worker(client), activity_worker(client, probe):
        handle = await start(client, {"a": 5.0})
        got = await until(lambda: _result(handle, "a"), "the result of a", timeout=90)
        # It crossed a continue-as-new boundary, and its result came by signal.
        assert await runs(client, handle.id) >= 2
        assert "a" in await signalled_results(client, handle.id)
    assert got.ok and got.result == {"key": "a", "answer": 42}, got
    assert probe.started == {"a": 1} and probe.finished == {"a": 1}, (probe.started,
                                                                      probe.finished)


async def test_work_whose_executor_dies_after_its_run_ended_is_declared_lost(
        client: Client) -> None:
    async with workflow_worker(client), executor_process(client) as lines:
        assert await asyncio.wait_for(lines.get(), 30) == "ready"
        handle = await start(client, {"b": 120.0})
        assert await asyncio.wait_for(lines.get(), 30) == "started b"
        first = await runs(client, handle.id)
        await until(lambda: _more_runs(client, handle.id, first + 2), "two more runs")
        await asyncio.sleep(2)  # its heartbeat has found its run gone: an orphan now
        lines.kill()  # SIGKILL: nothing says the work runs any more
        got = await until(lambda: _result(handle, "b"), "b declared lost", timeout=60)
    assert not got.ok and not got.cancelled and "lost" in (got.error or ""), got


async def test_an_orphan_whose_worker_shuts_down_says_so(client: Client) -> None:
    probe = ProbeActivities()
    async with workflow_worker(client):
        async with activity_worker(client, probe):
            handle = await start(client, {"d": 120.0})
            await until(lambda: _started(probe, "d"), "d to start")
            first = await runs(client, handle.id)
            await until(lambda: _more_runs(client, handle.id, first + 2), "two more runs")
            await asyncio.sleep(2)
        got = await until(lambda: _result(handle, "d"), "d's failure", timeout=30)
    assert not got.ok and "shut down" in (got.error or ""), got
    assert probe.cancelled == {"d": 1} and probe.finished == {}


async def test_cancelling_work_whose_run_ended_stops_it(client: Client) -> None:
    probe = ProbeActivities()
    async with workflow_worker(client), activity_worker(client, probe):
        handle = await start(client, {"c": 120.0})
        await until(lambda: _started(probe, "c"), "c to start")
        first = await runs(client, handle.id)
        await until(lambda: _more_runs(client, handle.id, first + 1), "two more runs")
        await handle.signal(OutlivingProbeWorkflow.cancel, Cancel(key="c"))
        got = await until(lambda: _result(handle, "c"), "c cancelled")
        assert got.cancelled, got
        # The executor hears it at its next `work-alive` and stops the work.
        await until(lambda: _cancelled(probe, "c"), "the activity to stop", timeout=30)
    assert probe.finished == {}


class ExecutorLines(asyncio.Queue[str]):
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        super().__init__()
        self.process = process

    def kill(self) -> None:
        self.process.kill()


@contextlib.asynccontextmanager
async def executor_process(client: Client) -> AsyncIterator[ExecutorLines]:
    """The probe's activities in a process of their own, which a test can SIGKILL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.outliving_probe", client.service_client.config.target_host,
        stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parent.parent)
    lines = ExecutorLines(process)

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            await lines.put(line.decode().strip())

    reader = asyncio.ensure_future(read())
    try:
        yield lines
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        reader.cancel()


async def signalled_results(client: Client, workflow_id: str) -> list[str]:
    """The keys of the `work-done` signals any run of the workflow received."""
    keys = []
    async for run in client.list_workflows(f'WorkflowId = "{workflow_id}"'):
        history = await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
        for event in history.events:
            attrs = event.workflow_execution_signaled_event_attributes
            if event.HasField("workflow_execution_signaled_event_attributes") \
                    and attrs.signal_name == "work-done":
                keys.append(json.loads(attrs.input.payloads[0].data)["key"])
    return keys


async def _result(handle: WorkflowHandle[Any, Any], key: str) -> Any:
    return (await results(handle)).results.get(key)


async def _started(probe: ProbeActivities, key: str) -> bool:
    return probe.started.get(key, 0) > 0


async def _cancelled(probe: ProbeActivities, key: str) -> bool:
    return probe.cancelled.get(key, 0) > 0


async def _more_runs(client: Client, workflow_id: str, at_least: int) -> bool:
    return await runs(client, workflow_id) >= at_least


async def test_a_result_finished_after_its_run_ended_but_before_its_heartbeat_noticed(
        client: Client) -> None:
    """The work ends between two heartbeats, after its run continued as new: its completion is
    refused, and the result goes to the next run by signal."""
    probe = ProbeActivities()
    async with workflow_worker(client), activity_worker(client, probe):
        handle = await client.start_workflow(
            OutlivingProbeWorkflow.run, ProbeInput(hand_out={"e": 3.0}, heartbeat=60.0),
            id=f"probe/{uuid.uuid4().hex[:8]}", task_queue=WORKFLOW_QUEUE)
        got = await until(lambda: _result(handle, "e"), "the result of e", timeout=60)
    assert got.ok and got.result == {"key": "e", "answer": 42}, got
    assert probe.finished == {"e": 1}


async def test_work_no_worker_started_before_its_run_ended_is_issued_again(
        client: Client) -> None:
    """Scheduled, but no executor took it (all busy, or none up) when the run continued as new:
    that activity would never start. The next run issues it again; it runs once."""
    probe = ProbeActivities()
    async with workflow_worker(client):
        handle = await start(client, {"f": 1.0})
        first = await runs(client, handle.id)
        await until(lambda: _more_runs(client, handle.id, first + 2), "two more runs")
        async with activity_worker(client, probe):
            got = await until(lambda: _result(handle, "f"), "the result of f", timeout=60)
    assert got.ok and got.result == {"key": "f", "answer": 42}, got
    assert probe.started == {"f": 1} and probe.finished == {"f": 1}


async def test_the_task_that_continues_as_new_asks_temporal_nothing(client: Client) -> None:
    """Which work started is asked in an earlier workflow task: a task held open by that
    question is one that results arriving meanwhile make Temporal refuse (and a refused
    continue-as-new replays the whole run)."""
    probe = ProbeActivities()
    async with workflow_worker(client), activity_worker(client, probe):
        handle = await start(client, {"g": 4.0})
        await until(lambda: _started(probe, "g"), "g to start")
        first = await runs(client, handle.id)
        await until(lambda: _more_runs(client, handle.id, first + 1), "a continue-as-new")
        history = await client.get_workflow_handle(
            handle.id, run_id=handle.result_run_id).fetch_history()
    events = [e for e in history.events]
    assert events[-1].HasField("workflow_execution_continued_as_new_event_attributes")
    last_task = max(i for i, e in enumerate(events)
                    if e.HasField("workflow_task_completed_event_attributes"))
    asked = [i for i, e in enumerate(events)
             if e.HasField("marker_recorded_event_attributes")
             and e.marker_recorded_event_attributes.marker_name == "core_local_activity"]
    assert asked, "the run did not ask which of its work started"
    assert all(i < last_task for i in asked), (asked, last_task)


async def test_a_copy_that_started_after_all_is_told_it_is_not_wanted(client: Client) -> None:
    """Work that no worker had started when asked is issued again by the next run; if the
    first copy started after all, it asks (`work-alive`) and is told to stop."""
    probe = ProbeActivities()
    async with workflow_worker(client):
        handle = await start(client, {"h": 1.0})
        first = await runs(client, handle.id)
        await until(lambda: _more_runs(client, handle.id, first + 2), "two more runs")
        answer = await _ask_alive(handle, "h")  # h is this run's own, issued again
        async with activity_worker(client, probe):
            got = await until(lambda: _result(handle, "h"), "the result of h", timeout=60)
        gone = await _ask_alive(handle, "h")
    assert answer.wanted is False, answer
    assert gone.wanted is False
    assert got.ok and probe.finished == {"h": 1}, (got, probe.finished)


async def _ask_alive(handle: WorkflowHandle[Any, Any], key: str) -> WorkWanted:
    for _ in range(50):  # an update may meet the workflow between two runs
        with contextlib.suppress(Exception):
            return await handle.execute_update("work-alive", WorkAlive(key=key),
                                               result_type=WorkWanted)
        await asyncio.sleep(0.1)
    raise AssertionError("the probe does not answer work-alive")
