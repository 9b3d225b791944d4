"""`publish-queue/<repository>`: hands out turns to publish into the stable repository, in merge
order, one change at a time (the decisions are lockmaster/pipelines/publish_queue.py).

The router enqueues each merged change (signal-with-start) before it starts the change's own
workflow, so arrival here is merge order. Changes' workflows say `ready` once their package is
there (the gate's build promoted, or rebuilt) and `finished` once it is published (or failed);
the queue answers `your_turn`. It continues as new whenever history grows long, without waiting:
a turn not yet delivered is sent again by the next run (receiving it twice is harmless).
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from lockmaster.model.audit import note_of
    from lockmaster.model.publish import (
        Enqueue,
        Finished,
        QueueInput,
        QueueState,
        QueueStatus,
        QueueStatusQuery,
        Ready,
        SkipRequest,
        Turn,
    )
    from lockmaster.model.testenv import OperatorAnswer
    from lockmaster.pipelines.publish_queue import PublishQueue
    from lockmaster.workflows.details import publish_queue_details
    from lockmaster.workflows.longlived import should_continue_as_new
    from lockmaster.workflows.tasks import spawn


def publish_queue_id(repository: str, prefix: str = "") -> str:
    return f"{prefix}publish-queue/{repository}"


@workflow.defn(name="PublishQueueWorkflow")
class PublishQueueWorkflow:
    @workflow.init
    def __init__(self, inp: QueueInput) -> None:
        self._input = inp
        self._queue = PublishQueue(inp)
        self._dirty = True
        self._tasks: set[asyncio.Task[None]] = set()

    @workflow.signal(name="enqueue")
    def enqueue(self, request: Enqueue) -> None:
        self._queue.enqueue(request.workflow_id, request.change)
        self._dirty = True

    @workflow.signal(name="ready")
    def ready(self, request: Ready) -> None:
        self._queue.ready(request.workflow_id)
        self._dirty = True

    @workflow.signal(name="finished")
    def finished(self, request: Finished) -> None:
        self._queue.finished(request.workflow_id, request.ok, request.snapshot, request.detail)
        self._dirty = True

    @workflow.update(name="skip")
    def skip(self, request: SkipRequest) -> OperatorAnswer:
        """For operators: a change whose workflow is gone (terminated) no longer holds the
        queue."""
        entry = self._queue.entry(request.workflow_id)
        if entry is None or entry.state in (QueueState.DONE, QueueState.FAILED):
            return OperatorAnswer(ok=False, message=f"{request.workflow_id} is not waiting in "
                                                    f"the publish queue")
        note = note_of(request.by, request.reason)
        said = note.describe("skipped") if note else "skipped by an operator"
        self._queue.finished(request.workflow_id, False, None, said)
        self._dirty = True
        return OperatorAnswer(ok=True, message=f"{entry.change} {said}")

    @workflow.query(name="status")
    def status(self, _: QueueStatusQuery) -> QueueStatus:
        return QueueStatus(repository=self._input.repository,
                           entries=sorted(self._input.entries, key=lambda e: e.sequence))

    @workflow.run
    async def run(self, inp: QueueInput) -> None:
        legacy = not workflow.patched("continue-without-draining")
        if not legacy:
            for entry in inp.entries:  # turns the last run gave but did not deliver
                if entry.state is QueueState.PUBLISHING and not entry.turn_delivered:
                    assert entry.snapshot is not None
                    self._spawn_turn(entry.workflow_id, entry.snapshot)
        while True:
            self._dirty = False
            while (entry := self._queue.next_turn()) is not None:
                assert entry.snapshot is not None
                self._spawn_turn(entry.workflow_id, entry.snapshot)
            if self._should_continue_as_new():
                await workflow.wait_condition(
                    lambda: ((legacy and not self._tasks) or not legacy)
                    and workflow.all_handlers_finished())
                workflow.continue_as_new(self._input)
            # The Web UI's "Current details" (not a command).
            workflow.set_current_details(publish_queue_details(self._input.repository,
                                                               self._input.entries))
            await workflow.wait_condition(lambda: self._dirty)

    def _wake(self) -> None:
        self._dirty = True

    def _spawn_turn(self, workflow_id: str, snapshot: str) -> None:
        spawn(self._hand_turn(workflow_id, snapshot), self._tasks, self._wake)

    async def _hand_turn(self, workflow_id: str, snapshot: str) -> None:
        try:
            await workflow.get_external_workflow_handle(workflow_id).signal(
                "your_turn", Turn(snapshot=snapshot))
        except Exception as exc:  # the change's workflow is gone (not found, closed)
            self._queue.finished(workflow_id, False, None, f"its workflow is gone ({exc})")
            return
        entry = self._queue.entry(workflow_id)
        if entry is not None:
            entry.turn_delivered = True

    def _should_continue_as_new(self) -> bool:
        return should_continue_as_new(self._input.max_history_events)
