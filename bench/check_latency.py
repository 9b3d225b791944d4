"""Benchmark: the check pipeline's latency and orchestration overhead on the Temporal dev server.

For a check with 5 jobs (`merge`, then 4 jobs depending on it; every job `sleep`s a fixed time),
measures over N changes checked one after another:
- event received -> first job's command started (p50, p95)
- orchestration overhead per job: (event -> report posted) minus the critical path's sleeps
  (merge + one dependent), divided by the 5 jobs.

Run: .venv/bin/python -m bench.check_latency [--changes 20] [--sleep 0.5]
Results: printed, and written to bench/results/check_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from lockmaster.temporal import search_attributes
from lockmaster.temporal.devserver import temporal_binary
from tests.deployment import deployment, make_config, unique_project

JOBS = ["merge", "unit", "functional", "pep8", "docs"]


async def history_marks(client: Client, workflow_id: str) -> dict[str, float]:
    """When each step up to the first build happened, from the workflow's history."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    marks: dict[str, float] = {}
    scheduled: dict[int, str] = {}
    for event in history.events:
        at = event.event_time.ToDatetime(tzinfo=UTC).timestamp()
        if event.HasField("workflow_execution_started_event_attributes"):
            marks["workflow started"] = at
        elif event.HasField("activity_task_scheduled_event_attributes"):
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = name
        elif event.HasField("activity_task_started_event_attributes"):
            name = scheduled[event.activity_task_started_event_attributes.scheduled_event_id]
            if name == "run_build" and "first build activity started" not in marks:
                marks["first build activity started"] = at
        elif event.HasField("activity_task_completed_event_attributes"):
            name = scheduled[event.activity_task_completed_event_attributes.scheduled_event_id]
            if name in ("resolve_dependencies", "prepare_state"):
                marks[f"{name} done"] = at
    return marks


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def main(changes: int, sleep: float) -> dict[str, float]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL, dev_server_log_level="error",
    )
    tmp = Path(tempfile.mkdtemp(prefix="lockmaster-bench-"))
    starts = tmp / "starts"
    name = unique_project("bench")
    jobs = [{"name": j, "nodeset": "local",
             "run": f"echo {j} $(date +%s.%N) >> {starts}; sleep {sleep}"} for j in JOBS]
    config = make_config(tmp, jobs=jobs, projects=[{
        "name": name, "connection": "local", "pipelines": {"check": {"jobs": [
            "merge", *({"name": j, "dependencies": ["merge"]} for j in JOBS[1:])]}}}])
    first_start: list[float] = []
    overhead: list[float] = []
    phases: dict[str, list[float]] = {}
    try:
        async with deployment(env.client, config) as dep:
            dep.store.create_project(name, {"README": "bench\n"})
            for i in range(changes + 1):  # the first is a warm-up (caches, imports)
                info = await asyncio.to_thread(
                    dep.store.upload, name, files={f"f{i}": "x\n"}, subject=f"c{i}")
                starts.write_text("")
                received = time.time()
                actions = await dep.router.route(dep.event(info))
                await dep.outcome(actions[0].workflow_id or "")
                reported = dep.reports(info.number)[-1]["at"]
                begun = [float(line.split()[1]) for line in starts.read_text().splitlines()]
                if i == 0:
                    continue
                first_start.append(min(begun) - received)
                marks = await history_marks(env.client, actions[0].workflow_id or "")
                marks["job command started"] = min(begun)
                previous = received
                for label, at in marks.items():
                    phases.setdefault(label, []).append(at - previous)
                    previous = at
                critical = 2 * sleep
                overhead.append((reported - received - critical) / len(JOBS))
    finally:
        await env.shutdown()
    results = {
        "changes": changes,
        "job_sleep_s": sleep,
        "event_to_first_job_p50_s": round(statistics.median(first_start), 3),
        "event_to_first_job_p95_s": round(percentile(first_start, 0.95), 3),
        "overhead_per_job_p50_s": round(statistics.median(overhead), 3),
        "overhead_per_job_p95_s": round(percentile(overhead, 0.95), 3),
    }
    results["phases_p50_s"] = {k: round(statistics.median(v), 3) for k, v in phases.items()}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "check_latency.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--sleep", type=float, default=0.5)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.changes, args.sleep)), indent=2))
