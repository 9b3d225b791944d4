"""Benchmark: the gate on the real workflows (`lockmaster simulate`) against reference models.

Workload and models: bench/gate_workload.py (30 changes approved 0.5 s apart, 10% broken, every
job 2 s). Measures approval -> merge (P50, P95) and builds started per merged change, for:
lockmaster (the real GateQueueWorkflow on a Temporal dev server, simulated Gerrit and executor),
Zuul's algorithm with zero overhead, one change at a time, and the ideal.

Run: .venv/bin/python -m bench.gate_throughput [--runs 3]
Results: printed, and written to bench/results/gate_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from datetime import UTC
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from bench.gate_workload import (
    CHANGES,
    broken_changes,
    ideal_model,
    scenario_yaml,
    zuul_model,
)
from lockmaster.simulate.loading import parse_scenario
from lockmaster.simulate.runner import run_simulation
from lockmaster.temporal import search_attributes
from lockmaster.temporal.devserver import temporal_binary


def measure(report: dict[str, Any]) -> dict[str, Any]:
    approved = {e["change"]: e["at"] for e in report["events"] if e["event"] == "approve"}
    latency = {m["change"]: m["at"] - approved[m["change"]] for m in report["merged"]}
    values = sorted(latency.values())
    gate_builds = [b for b in report["builds"] if b["pipeline"] == "gate"]
    return {
        "merged": len(values),
        "p50_s": round(statistics.median(values), 2),
        "p95_s": round(values[min(len(values) - 1, int(0.95 * len(values)))], 2),
        "builds_per_merged_change": round(len(gate_builds) / len(values), 2),
        "latency": latency,
    }


async def activity_seconds(client: Client) -> dict[str, dict[str, float]]:
    """From the gate workflow's history: per activity type, how many ran and the median (and
    sum) of their schedule-to-completion; the same for the workflow's own tasks
    ("workflow_task": the time the queue's decisions took, dispatch included), and for the
    time activities waited for a worker to start them ("activity_dispatch")."""
    durations: dict[str, list[float]] = {}
    async for wf in client.list_workflows('WorkflowType = "GateQueueWorkflow"'):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        scheduled: dict[int, tuple[str, float]] = {}
        for event in history.events:
            at = event.event_time.ToDatetime(tzinfo=UTC).timestamp()
            if event.HasField("activity_task_scheduled_event_attributes"):
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                scheduled[event.event_id] = (name, at)
            elif event.HasField("activity_task_started_event_attributes"):
                attrs = event.activity_task_started_event_attributes
                _, start = scheduled[attrs.scheduled_event_id]
                durations.setdefault("activity_dispatch", []).append(at - start)
            elif event.HasField("activity_task_completed_event_attributes"):
                attrs = event.activity_task_completed_event_attributes
                name, start = scheduled[attrs.scheduled_event_id]
                durations.setdefault(name, []).append(at - start)
            elif event.HasField("workflow_task_scheduled_event_attributes"):
                scheduled[event.event_id] = ("workflow_task", at)
            elif event.HasField("workflow_task_completed_event_attributes"):
                attrs = event.workflow_task_completed_event_attributes
                name, start = scheduled[attrs.scheduled_event_id]
                durations.setdefault(name, []).append(at - start)
    return {name: {"count": len(v), "p50_s": statistics.median(v), "total_s": sum(v)}
            for name, v in sorted(durations.items())}


async def main(runs: int) -> dict[str, Any]:
    scenario = parse_scenario(scenario_yaml(), "gate-benchmark.yaml")
    measured = []
    git_costs = []
    for _ in range(runs):
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(), data_converter=pydantic_data_converter,
            search_attributes=search_attributes.ALL, dev_server_log_level="error")
        try:
            measured.append(measure(await run_simulation(scenario, client=env.client)))
            git_costs.append(await activity_seconds(env.client))
        finally:
            await env.shutdown()
    merge_s = statistics.median(c["prepare_state"]["p50_s"] for c in git_costs)
    # The success report and the submit are one activity now (report_and_submit).
    submit_s = statistics.median((c.get("report_and_submit") or c["submit"])["p50_s"]
                                 for c in git_costs)
    same_git = zuul_model(merge_seconds=merge_s, submit_seconds=submit_s)
    zuul = zuul_model()
    p50s = [m["p50_s"] for m in measured]
    # Overhead per item: each merged change's latency minus the zero-overhead model's (and
    # minus the model's with the measured merge and submit times).
    overhead = [
        m["latency"][name] - zuul.latency[int(name[1:])]
        for m in measured for name in m["latency"] if int(name[1:]) in zuul.latency
    ]
    overhead_same_git = [
        m["latency"][name] - same_git.latency[int(name[1:])]
        for m in measured for name in m["latency"] if int(name[1:]) in same_git.latency
    ]
    # Orchestration per item, from the histories: the time Temporal and the workflow spent
    # (workflow tasks, activity dispatch) divided by the changes, most of it in parallel with
    # jobs; and, on the critical path, the gap to the same-git-costs model of the changes that
    # no failure or queueing delayed (those approved before the first broken one).
    orchestration = [
        (c["workflow_task"]["total_s"] + c["activity_dispatch"]["total_s"]) / CHANGES
        for c in git_costs
    ]
    first_broken = min(broken_changes())
    undelayed_gap = [
        m["latency"][name] - same_git.latency[int(name[1:])]
        for m in measured for name in m["latency"] if int(name[1:]) < first_broken
    ]
    result = {
        "changes": CHANGES,
        "lockmaster": [{k: v for k, v in m.items() if k != "latency"} for m in measured],
        # Per run, each merged change's approval -> merge, and the same-git-costs model's.
        "latency_by_change": [{name: round(v, 2) for name, v in m["latency"].items()}
                              for m in measured],
        "lockmaster_p50_median_s": round(statistics.median(p50s), 2),
        "zuul_model": zuul.summary(),
        "merge_p50_s": round(merge_s, 3),
        # Where the time goes, per run: each activity type and the workflow tasks.
        "steps": [{name: {"count": v["count"], "p50_s": round(v["p50_s"], 3),
                          "total_s": round(v["total_s"], 3)}
                   for name, v in c.items()} for c in git_costs],
        "report_and_submit_p50_s": round(submit_s, 3),
        "zuul_model_same_git_costs": same_git.summary(),
        "same_git_latency_by_change": {f"C{n:02d}": round(v, 2)
                                       for n, v in sorted(same_git.latency.items())},
        "p50_vs_zuul_same_git_costs": round(
            statistics.median(p50s) / same_git.summary()["p50_s"] - 1, 3),
        "serial_model": zuul_model(window=1).summary(),
        "ideal_model": ideal_model().summary(),
        "p50_vs_zuul": round(statistics.median(p50s) / zuul.summary()["p50_s"] - 1, 3),
        "overhead_per_item_p50_s": round(statistics.median(overhead), 3),
        "overhead_per_item_vs_same_git_costs_p50_s": round(statistics.median(overhead_same_git),
                                                           3),
        "orchestration_seconds_per_item": [round(o, 3) for o in orchestration],
        "undelayed_gap_vs_same_git_costs_p50_s": round(statistics.median(undelayed_gap), 3),
        "undelayed_gap_vs_same_git_costs_max_s": round(max(undelayed_gap), 3),
    }
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "gate_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.runs)), indent=2))
