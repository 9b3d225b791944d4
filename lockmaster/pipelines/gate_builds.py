"""What the gate asks the executor for, and what a batch of submits did to the queue (pure:
workflows/gate_work.py carries these out)."""

from __future__ import annotations

from lockmaster.execution.logs import build_log_path
from lockmaster.model.build import BuildRequest
from lockmaster.model.gate import SubmitResult
from lockmaster.pipelines.gate_actions import Action, BuildAction
from lockmaster.pipelines.gate_queue import GateQueue


def build_request(queue: GateQueue, action: BuildAction, precedence: int) -> BuildRequest | None:
    """The executor's request for a build the queue started (None: its item left or has no
    merged state any more, and the build is not asked for)."""
    item = queue.item(action.key)
    if item is None or item.state is None:
        return None
    build = action.build
    return BuildRequest(
        build_id=build.build_id, pipeline=item.pipeline, change=item.change, job=action.job,
        state=item.state, attempt=build.attempt, precedence=precedence,
        position=queue.state.items.index(item) if item in queue.state.items else 0,
        log_path=build_log_path(item.pipeline, item.change, action.job.name, build.build_id),
        artifacts=queue.artifacts_for(action.key, action.job.name),
    )


def batch_done(queue: GateQueue, keys: list[str], results: list[SubmitResult],
               error: str | None) -> list[tuple[str, list[Action]]]:
    """The answers of a batch of report-and-submits, in order (it stops at the first refusal):
    every outcome into the queue first, then (per item key) the reports they call for. A batch
    that failed as a whole (`error`, no answers) failed its first item; the items not reached
    go back to the queue's rules."""
    follow_ups: list[tuple[str, list[Action]]] = []
    for index, key in enumerate(keys):
        if index < len(results):
            follow_ups.append((key, queue.submit_done(key, results[index].ok,
                                                      results[index].error)))
        elif error is not None and index == 0:
            follow_ups.append((key, queue.submit_done(key, False, error)))
        else:
            queue.submit_not_attempted(key)
    return follow_ups
