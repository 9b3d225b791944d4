"""What a workflow sees of one workflow task: everything that reached it, before it runs.

A long-lived workflow woken by a signal must not decide (to continue as new, above all) before
the activity results that came in the same task are applied: the gate benchmark's queue carried
14 finished builds as still in flight into its next run, which waited for them ~85 s.
"""

from __future__ import annotations

import asyncio
import uuid

from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker

from lockmaster.workers.common import whole_activations, workflow_runner
from tests.activation_probe import TASK_QUEUE, ActivationProbeWorkflow, Nudge, Seen, quick


async def _history_length(client: Client, wid: str) -> int:
    return len((await client.get_workflow_handle(wid).fetch_history()).events)


async def _probe(client: Client, *, whole: bool) -> tuple[Seen, WorkflowHistory]:
    """The result and the signal reach one workflow task: the activity completes and the signal
    arrives while no workflow worker runs."""
    wid = f"activation-probe-{uuid.uuid4().hex[:8]}"
    queue = f"{TASK_QUEUE}-{wid}"

    def workflows() -> Worker:
        worker = Worker(client, task_queue=queue, workflows=[ActivationProbeWorkflow],
                        workflow_runner=workflow_runner(), max_cached_workflows=0)
        return whole_activations(worker) if whole else worker

    handle = await client.start_workflow(ActivationProbeWorkflow.run, Nudge(), id=wid,
                                         task_queue=queue, result_type=Seen)
    async with workflows():  # the first task: the activity is scheduled
        for _ in range(200):
            if await _history_length(client, wid) >= 5:  # ... TASK_COMPLETED, ACTIVITY_SCHEDULED
                break
            await asyncio.sleep(0.05)
    async with Worker(client, task_queue=queue, activities=[quick]):
        for _ in range(200):
            events = (await handle.fetch_history()).events
            if any(e.HasField("activity_task_completed_event_attributes") for e in events):
                break
            await asyncio.sleep(0.05)
    await handle.signal(ActivationProbeWorkflow.nudge, Nudge())
    async with workflows():
        seen = await handle.result()
    return seen, await handle.fetch_history()


async def test_a_signal_and_a_result_in_one_task_are_both_seen_before_the_workflow_runs(
        client: Client) -> None:
    seen, history = await _probe(client, whole=True)
    assert seen.result_applied
    # The behaviour is recorded in the history: it replays the same, with or without the flag.
    replayer = Replayer(workflows=[ActivationProbeWorkflow],
                        data_converter=pydantic_data_converter,
                        workflow_runner=workflow_runner())
    await replayer.replay_workflow(history)


async def test_without_it_the_sdk_runs_the_workflow_on_the_signal_first(
        client: Client) -> None:
    """What the orchestrator's workers are set against (if a later SDK makes whole activations
    its default, this shows it, and whole_activations can go)."""
    seen, _ = await _probe(client, whole=False)
    assert not seen.result_applied
