"""Soak benchmark: many patchsets through check and many approvals through one gate queue, on the
real workflows (`lockmaster simulate`: simulated Gerrit and executor, real git), to see whether
the long-lived workflows slow down as they age.

Workload (defaults: the issue's): 2,000 patchsets uploaded to check across 20 projects, 500 of
the changes then approved into one shared gate queue (`integrated`), 5% of them broken (their
`test` job fails in every stack they are in); builds take `--build-seconds`.

Reports, from the workflows' histories:
- the workflow-task latency (scheduled -> completed) of the gate queue's runs, p50 and p95, in the
  first and the last tenth of the gate's life (by time), and over all of it;
- the same for the check workflows (first and last tenth of the checks, by start time);
- history events per gated change (every run of the queue, its build children included) and per
  check;
- the queue's continue-as-new count.
Target: the last tenth no slower than the first.

Run: .venv/bin/python -m bench.soak [--checks 2000 --approvals 500 --broken 0.05]
     (--checks 200 --approvals 50 for a quick look)
Results: printed, and written to bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from lockmaster.simulate.loading import parse_scenario
from lockmaster.simulate.runner import run_simulation
from lockmaster.temporal import search_attributes
from lockmaster.temporal.devserver import temporal_binary

RESULTS = Path(__file__).parent / "results" / "soak.json"
PROJECTS = 20


def layout() -> dict[str, Any]:
    projects = [f"org/p{i:02d}" for i in range(PROJECTS)]
    return {
        "pipelines": [
            {"name": "check", "manager": "independent",
             "trigger": [{"event": "patchset-created"}],
             "success": {"labels": {"Verified": 1}}, "failure": {"labels": {"Verified": -1}}},
            {"name": "gate", "manager": "dependent",
             "trigger": [{"event": "comment-added", "approval": {"Workflow": 1}}],
             "require": {"Code-Review": 2, "Workflow": 1},
             "start": {"labels": {"Verified": 0}},
             "success": {"labels": {"Verified": 2}, "submit": True},
             "failure": {"labels": {"Verified": -2}}},
        ],
        "jobs": [{"name": "merge"}, {"name": "test"}],
        "projects": [{"name": p, "queue": "integrated",
                      "pipelines": {pipe: {"jobs": ["merge", {"name": "test",
                                                              "dependencies": ["merge"]}]}
                                    for pipe in ("check", "gate")}} for p in projects],
    }


def scenario(checks: int, approvals: int, broken: float, check_rate: float,
             approval_rate: float, build_seconds: float, seed: int = 7) -> dict[str, Any]:
    """Uploads at `check_rate` per second; the approvals start once a quarter of the uploads
    are in, at `approval_rate` per second (each approved change was checked first)."""
    rng = random.Random(seed)
    names = [f"c{i:04d}" for i in range(checks)]
    changes = {n: {"project": f"org/p{i % PROJECTS:02d}"} for i, n in enumerate(names)}
    events: list[dict[str, Any]] = [{"upload": n, "at": round(i / check_rate, 3)}
                                    for i, n in enumerate(names)]
    gated = names[:approvals]
    start = checks / check_rate / 4
    events += [{"approve": n, "at": round(start + i / approval_rate, 3)}
               for i, n in enumerate(gated)]
    events.sort(key=lambda e: e["at"])
    bad = set(rng.sample(gated, round(broken * approvals)))
    return {
        "name": f"soak: {checks} checks, {approvals} approvals",
        "layout": layout(), "changes": changes, "events": events,
        "outcomes": [{"job": "test", "change": n, "result": "FAILURE"} for n in sorted(bad)],
        "durations": {"default": build_seconds},
    }


async def task_latencies(client: Client, query: str) -> list[tuple[float, float]]:
    """(scheduled time, scheduled -> completed seconds) of every workflow task of every run the
    query lists."""
    out: list[tuple[float, float]] = []
    async for wf in client.list_workflows(query):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        scheduled: dict[int, float] = {}
        for event in history.events:
            at = event.event_time.ToDatetime().timestamp()
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                scheduled[event.event_id] = at
            elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                sid = event.workflow_task_completed_event_attributes.scheduled_event_id
                if sid in scheduled:
                    out.append((scheduled[sid], at - scheduled[sid]))
    return out


async def history_events(client: Client, query: str) -> tuple[int, int]:
    """(runs, events) of every run the query lists."""
    runs = events = 0
    async for wf in client.list_workflows(query):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        runs += 1
        events += len(history.events)
    return runs, events


def tenths(samples: list[tuple[float, float]]) -> dict[str, Any]:
    """p50/p95 (ms) of the first and last tenth (by time) and of all samples."""
    if not samples:
        return {}
    samples = sorted(samples)
    first_end = samples[0][0] + (samples[-1][0] - samples[0][0]) / 10
    last_start = samples[-1][0] - (samples[-1][0] - samples[0][0]) / 10

    def pct(values: list[float]) -> dict[str, float]:
        values = sorted(values)
        if not values:
            return {}
        return {"n": len(values), "p50_ms": round(1000 * statistics.median(values), 1),
                "p95_ms": round(1000 * values[min(len(values) - 1, int(0.95 * len(values)))],
                                1)}

    return {"first_tenth": pct([d for t, d in samples if t <= first_end]),
            "last_tenth": pct([d for t, d in samples if t >= last_start]),
            "all": pct([d for _, d in samples])}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    data = scenario(args.checks, args.approvals, args.broken, args.check_rate,
                    args.approval_rate, args.build_seconds)
    parsed = parse_scenario(yaml.safe_dump(data, sort_keys=False), "soak.yaml")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL, dev_server_log_level="error")
    try:
        started = time.time()
        report = await run_simulation(parsed, client=env.client)
        took = time.time() - started
        client = env.client
        gate_q = 'WorkflowType = "GateQueueWorkflow"'
        check_q = 'WorkflowType = "CheckWorkflow"'
        children_q = 'WorkflowType = "DetachedWorkWorkflow"'
        gate_runs, gate_events = await history_events(client, gate_q)
        child_runs, child_events = await history_events(client, children_q)
        check_runs, check_events = await history_events(client, check_q)
        merged = len(report["merged"])
        result = {
            "workload": {k: getattr(args, k) for k in ("checks", "approvals", "broken",
                                                         "check_rate", "approval_rate",
                                                         "build_seconds")},
            "seconds": round(took, 1),
            "merged": merged,
            "gate_runs": gate_runs,
            "gate_workflow_task_latency": tenths(await task_latencies(client, gate_q)),
            "check_workflow_task_latency": tenths(await task_latencies(client, check_q)),
            "gate_history_events_per_change": round(
                (gate_events + child_events) / max(1, args.approvals), 1),
            "gate_queue_events_per_change": round(gate_events / max(1, args.approvals), 1),
            "check_history_events_per_check": round(check_events / max(1, check_runs), 1),
            "detached_children": child_runs,
        }
    finally:
        await env.shutdown()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--approvals", type=int, default=500)
    parser.add_argument("--broken", type=float, default=0.05)
    parser.add_argument("--check-rate", type=float, default=10.0, help="uploads per second")
    parser.add_argument("--approval-rate", type=float, default=2.0, help="approvals per second")
    parser.add_argument("--build-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.approvals > args.checks:
        parser.error("--approvals cannot exceed --checks (each approved change is checked)")
    return args


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse())), indent=2))
