"""Benchmark: what one wake-up of the gate workflow costs in pure code, as the queue fills.

On every wake-up GateQueueWorkflow runs `GateQueue.process()`, then renders the Web UI's
current details (`queue_details(queue_status(...))`). This replays a workload through Zuul's
model (bench/gate_workload.py: the same pure queue processor, on a discrete-event clock) and,
at every wake-up, does what the workflow does, measuring per wake-up: CPU time (noisy) and
Python function calls (deterministic: cProfile's count), grouped by queue length.

`--merged 500` starts the queue with 500 merged changes remembered (a long-lived queue's
steady state: `QueueState.merged_keys` keeps the last 500). Longer builds make longer queues:
`--build-seconds 8` keeps ~40 items in it at 2 approvals a second.

Run: .venv/bin/python -m bench.gate_decisions [--changes 100 --rate 2 --broken 0.05
     --build-seconds 8 --merged 500]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.gate_workload import Workload, add_workload_arguments, workload_from, zuul_model
from lockmaster.pipelines.gate_queue import GateQueue
from lockmaster.pipelines.gate_view import queue_status
from lockmaster.workflows.details import queue_details

BUCKETS = [(0, 10), (10, 20), (20, 40), (40, 80), (80, 10_000)]


def _workflow_like(merged: int, on_wakeup: Callable[[GateQueue, float], None] | None = None
                   ) -> Callable[[GateQueue, float], list[Any]]:
    """GateQueue.process as the workflow's wake-up uses it: process, then status and details."""
    original = GateQueue.process

    def process(self: GateQueue, now: float) -> list[Any]:
        if merged and not self.state.merged_keys:
            self.state.merged_keys = [f"{900000 + n},1" for n in range(merged)]
        if on_wakeup is not None:
            return on_wakeup(self, now)  # type: ignore[func-returns-value]
        out = original(self, now)
        queue_details(queue_status(self.state, now, idle=False, busy=True))
        return out

    return process


def measure(workload: Workload, merged: int) -> dict[str, Any]:
    """CPU per wake-up (process, status, details), by queue length."""
    samples: list[tuple[int, float, float, float]] = []
    original = GateQueue.process

    def wakeup(queue: GateQueue, now: float) -> list[Any]:
        cpu = time.thread_time()
        out = original(queue, now)
        after_process = time.thread_time()
        status = queue_status(queue.state, now, idle=False, busy=True)
        after_status = time.thread_time()
        queue_details(status)
        samples.append((len(queue.items), after_process - cpu, after_status - after_process,
                        time.thread_time() - after_status))
        return out

    GateQueue.process = _workflow_like(merged, wakeup)  # type: ignore[method-assign]
    try:
        outcome = zuul_model(workload=workload)
    finally:
        GateQueue.process = original  # type: ignore[method-assign]
    groups = []
    for low, high in BUCKETS:
        chosen = [s for s in samples if low <= s[0] < high]
        if chosen:
            groups.append({
                "items": f"{low}-{high - 1}" if high < 10_000 else f"{low}+",
                "wakeups": len(chosen),
                "process_ms": round(1000 * statistics.mean(s[1] for s in chosen), 3),
                "status_ms": round(1000 * statistics.mean(s[2] for s in chosen), 3),
                "details_ms": round(1000 * statistics.mean(s[3] for s in chosen), 3),
            })
    return {
        "workload": workload.describe(),
        "merged_remembered": merged,
        "wakeups": len(samples),
        "max_items": max(s[0] for s in samples),
        "cpu_total_s": round(sum(s[1] + s[2] + s[3] for s in samples), 3),
        "by_queue_length": groups,
        "model": outcome.summary(),
    }


def function_calls(workload: Workload, merged: int) -> dict[str, int]:
    """Python function calls of the whole model run, with and without the workflow's
    wake-up work (cProfile's count: deterministic, unlike CPU time on a shared machine)."""
    original = GateQueue.process
    counts = {}
    for name, process in (("model_alone", None), ("with_wakeups", _workflow_like(merged))):
        if process is not None:
            GateQueue.process = process  # type: ignore[method-assign]
        profile = cProfile.Profile()
        try:
            profile.enable()
            zuul_model(workload=workload)
        finally:
            profile.disable()
            GateQueue.process = original  # type: ignore[method-assign]
        counts[name] = sum(v[1] for v in pstats.Stats(profile).stats.values())  # type: ignore[attr-defined]
    counts["wakeup_work"] = counts["with_wakeups"] - counts["model_alone"]
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_arguments(parser)
    parser.add_argument("--merged", type=int, default=500,
                        help="merged changes the queue remembers from the start")
    parser.add_argument("--no-calls", action="store_true", help="skip the call counts")
    args = parser.parse_args()
    workload = workload_from(args)
    result = measure(workload, args.merged)
    if not args.no_calls:
        result["function_calls"] = function_calls(workload, args.merged)
    print(json.dumps(result, indent=2))
