"""Benchmark: the gate on the real workflows (`lockmaster simulate`) against reference models.

Workload and models: bench/gate_workload.py (by default 30 changes approved 0.5 s apart, 10%
broken, every job 2 s; `--changes 100 --rate 2 --broken 0.05 --build-seconds 2` is issue 14's
heavier one). Measures approval -> merge (P50, P95, and P50 of the first and last quarter of the
changes by approval order) and builds started per merged change, for: lockmaster (the real
GateQueueWorkflow on a Temporal dev server, simulated Gerrit and executor), Zuul's algorithm with
zero overhead, one change at a time, and the ideal. From the gate's history: how many workflow
tasks and activities ran and how long they took, its length and bytes by event type, each run
(continue-as-new) and failed workflow tasks; measured in the worker: the CPU time of each of
the gate's workflow activations (`--profile FILE`: and a cProfile of them); and the CPU time of
this process, its git processes and the dev server. The simulated builds heartbeat every 1 s
(`--executor-heartbeat`).

Run: .venv/bin/python -m bench.gate_throughput [--runs 3] [--changes N --rate R --broken S
     --build-seconds B] [--profile /tmp/gate.prof] [--reports DIR] [--summary]
Results: printed, and written to bench/results/gate_throughput.json (another workload than the
default: gate_throughput-<changes>x<rate>.json).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import resource
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner

from bench.gate_workload import (
    DEFAULT,
    Workload,
    add_workload_arguments,
    broken_changes,
    change_name,
    ideal_model,
    scenario_yaml,
    workload_from,
    zuul_model,
)
from lockmaster.simulate.loading import parse_scenario
from lockmaster.simulate.runner import run_simulation
from lockmaster.temporal import search_attributes
from lockmaster.temporal.devserver import temporal_binary
from lockmaster.workers import orchestrator

GATE = "GateQueueWorkflow"
# Seconds between the simulated builds' heartbeats. `simulate` beats every 0.1 s (a cancelled
# build notices at once); each beat is a call to the dev server, which at 2 approvals a second
# cost it ~8 of its ~21 CPU-seconds per run, on the 2 cores the gate and git share. Real
# executors beat every 2 s. (`--executor-heartbeat 0.1`: as the figures before issue 14.)
HEARTBEAT = 1.0


def _p(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def quarters(latency: dict[int, float], changes: int) -> dict[str, float | None]:
    """P50 of the merged changes approved in the first and in the last quarter of the run."""
    quarter = max(1, changes // 4)
    first = [v for n, v in latency.items() if n <= quarter]
    last = [v for n, v in latency.items() if n > changes - quarter]
    out: dict[str, float | None] = {
        "first_quarter_p50_s": round(statistics.median(first), 2) if first else None,
        "last_quarter_p50_s": round(statistics.median(last), 2) if last else None,
    }
    if first and last:
        out["last_vs_first_quarter"] = round(statistics.median(last) / statistics.median(first),
                                             3)
    return out


def measure(report: dict[str, Any], changes: int) -> dict[str, Any]:
    approved = {e["change"]: e["at"] for e in report["events"] if e["event"] == "approve"}
    latency = {m["change"]: m["at"] - approved[m["change"]] for m in report["merged"]}
    values = sorted(latency.values())
    gate_builds = [b for b in report["builds"] if b["pipeline"] == "gate"]
    return {
        "merged": len(values),
        "p50_s": round(statistics.median(values), 2),
        "p95_s": round(_p(values, 0.95), 2),
        "builds_per_merged_change": round(len(gate_builds) / len(values), 2),
        **quarters({int(name[1:]): v for name, v in latency.items()}, changes),
        "elapsed_s": report["elapsed"],
        "latency": latency,
    }


async def activity_seconds(client: Client) -> dict[str, Any]:
    """From the gate workflow's history: per activity type, how many ran and the median (and
    sum) of their schedule-to-completion; the same for the workflow's own tasks
    ("workflow_task": the time the queue's decisions took, dispatch included; split into
    "workflow_task_wait", scheduled to picked up by the worker, and "workflow_task_run",
    picked up to completed), and for the time activities waited for a worker to start them
    ("activity_dispatch"). "history_events": the history's length (all runs)."""
    durations: dict[str, list[float]] = {}
    events = 0
    runs: list[tuple[float, float, int]] = []
    # Workflow tasks that failed (by cause: UNHANDLED_COMMAND is a completion refused because
    # new events came in meanwhile) or timed out: each makes the worker replay the history.
    failed: dict[str, int] = {}
    sizes: dict[str, int] = {}  # history bytes by event type (activity type for activities)
    async for wf in client.list_workflows(f'WorkflowType = "{GATE}"'):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        scheduled: dict[int, tuple[str, float]] = {}
        started: dict[int, float] = {}
        events += len(history.events)
        times = [e.event_time.ToDatetime(tzinfo=UTC).timestamp() for e in history.events]
        runs.append((min(times), max(times), len(history.events)))
        for event in history.events:
            at = event.event_time.ToDatetime(tzinfo=UTC).timestamp()
            kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_").lower()
            if event.HasField("activity_task_scheduled_event_attributes"):
                kind += ":" + event.activity_task_scheduled_event_attributes.activity_type.name
            elif event.HasField("activity_task_completed_event_attributes"):
                kind += ":" + scheduled[event.activity_task_completed_event_attributes
                                        .scheduled_event_id][0]
            sizes[kind] = sizes.get(kind, 0) + event.ByteSize()
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
            elif event.HasField("workflow_task_started_event_attributes"):
                attrs = event.workflow_task_started_event_attributes
                _, start = scheduled[attrs.scheduled_event_id]
                started[event.event_id] = at
                durations.setdefault("workflow_task_wait", []).append(at - start)
            elif event.HasField("workflow_task_failed_event_attributes"):
                cause = WorkflowTaskFailedCause.Name(
                    event.workflow_task_failed_event_attributes.cause)
                failed[cause] = failed.get(cause, 0) + 1
            elif event.HasField("workflow_task_timed_out_event_attributes"):
                failed["TIMED_OUT"] = failed.get("TIMED_OUT", 0) + 1
            elif event.HasField("workflow_task_completed_event_attributes"):
                attrs = event.workflow_task_completed_event_attributes
                name, start = scheduled[attrs.scheduled_event_id]
                durations.setdefault(name, []).append(at - start)
                if attrs.started_event_id in started:
                    durations.setdefault("workflow_task_run", []).append(
                        at - started[attrs.started_event_id])
    out: dict[str, Any] = {name: {"count": len(v), "p50_s": statistics.median(v),
                                  "total_s": sum(v)}
           for name, v in sorted(durations.items())}
    out["history_events"] = {"count": events, "p50_s": 0.0, "total_s": 0.0}
    out["workflow_task_failures"] = failed
    out["history_bytes"] = dict(sorted(sizes.items(), key=lambda kv: -kv[1]))
    # Each run of the queue (continue-as-new starts the next): from, to (seconds after the
    # first one started) and its history's length.
    first = min((r[0] for r in runs), default=0.0)
    out["runs"] = [{"from_s": round(a - first, 2), "to_s": round(b - first, 2), "events": n}
                   for a, b, n in sorted(runs)]
    return out


# --- the gate's workflow activations, measured in the worker ------------------------------------


@dataclass
class Activations:
    """CPU time (of the worker thread) of each of the gate's activations, in order, and
    whether it answered queries only."""

    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    queries: int = 0
    first: float | None = None  # when the first activation came (time.time())
    # When Temporal first suggested continuing as new, per run (seconds after the first).
    suggested: dict[str, float] = field(default_factory=dict)
    profile: cProfile.Profile | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> dict[str, Any]:
        cpu = self.cpu
        if not cpu:
            return {"count": 0}
        quarter = max(1, len(cpu) // 4)
        return {
            "count": len(cpu),
            "query_only": self.queries,
            "cpu_p50_ms": round(1000 * statistics.median(cpu), 2),
            "cpu_p95_ms": round(1000 * _p(cpu, 0.95), 2),
            "cpu_total_s": round(sum(cpu), 3),
            "wall_total_s": round(sum(self.wall), 3),
            # Does an activation cost more as the run goes on (the queue fills)?
            "cpu_p50_first_quarter_ms": round(1000 * statistics.median(cpu[:quarter]), 2),
            "cpu_p50_last_quarter_ms": round(1000 * statistics.median(cpu[-quarter:]), 2),
            "cpu_max_ms": round(1000 * max(cpu), 2),
            "continue_as_new_suggested_at_s": sorted(self.suggested.values()),
        }


class _TimedInstance(WorkflowInstance):
    def __init__(self, inner: WorkflowInstance, record: Activations) -> None:
        self.inner = inner
        self.record = record

    def activate(self, act):  # type: ignore[no-untyped-def]
        query_only = bool(act.jobs) and all(j.HasField("query_workflow") for j in act.jobs)
        record = self.record
        if record.first is None:
            record.first = time.time()
        if act.continue_as_new_suggested and act.run_id not in record.suggested:
            record.suggested[act.run_id] = round(time.time() - record.first, 2)
        profile = self.record.profile
        cpu, wall = time.thread_time(), time.perf_counter()
        if profile is not None:
            with self.record.lock:
                profile.enable()
                try:
                    completion = self.inner.activate(act)
                finally:
                    profile.disable()
        else:
            completion = self.inner.activate(act)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        with self.record.lock:
            if query_only:
                self.record.queries += 1
            else:
                self.record.cpu.append(cpu)
                self.record.wall.append(wall)
        return completion

    def get_serialization_context(self, command_info):  # type: ignore[no-untyped-def]
        return self.inner.get_serialization_context(command_info)

    def get_external_store_context(self, command_info):  # type: ignore[no-untyped-def]
        return self.inner.get_external_store_context(command_info)

    def get_info(self):  # type: ignore[no-untyped-def]
        return self.inner.get_info()

    def get_thread_id(self) -> int | None:
        return self.inner.get_thread_id()


class _TimedRunner(WorkflowRunner):
    """The worker's own runner, timing the gate's activations in `record` and every other
    workflow type's in `others` (by type: the gate's children, the checks...)."""

    def __init__(self, inner: WorkflowRunner, record: Activations,
                 others: dict[str, Activations]) -> None:
        self.inner = inner
        self.record = record
        self.others = others

    def prepare_workflow(self, defn) -> None:  # type: ignore[no-untyped-def]
        self.inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        instance = self.inner.create_instance(det)
        if det.defn.name == GATE:
            return _TimedInstance(instance, self.record)
        other = self.others.setdefault(det.defn.name or "?", Activations())
        return _TimedInstance(instance, other)

    def set_worker_level_failure_exception_types(self, types) -> None:  # type: ignore[no-untyped-def]
        self.inner.set_worker_level_failure_exception_types(types)


@contextmanager
def timed_gate(record: Activations, others: dict[str, Activations]) -> Iterator[None]:
    """The orchestrator worker that `simulate` builds times the workflows' activations."""
    original = orchestrator.workflow_runner
    orchestrator.workflow_runner = (  # type: ignore[assignment]
        lambda: _TimedRunner(original(), record, others))
    try:
        yield
    finally:
        orchestrator.workflow_runner = original  # type: ignore[assignment]


# --- the benchmark -------------------------------------------------------------------------------


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def server_cpu() -> float:
    """CPU seconds of the dev server(s) this process started (children named temporal*)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[1]) == os.getpid() and name.startswith("temporal"):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _keep(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))


def results_path(workload: Workload) -> Path:
    out = Path(__file__).parent / "results"
    if workload == DEFAULT:
        return out / "gate_throughput.json"
    return out / f"gate_throughput-{workload.changes}x{1 / workload.spacing:g}.json"


async def main(runs: int, workload: Workload = DEFAULT, profile: Path | None = None,
               reports: Path | None = None, heartbeat: float = HEARTBEAT) -> dict[str, Any]:
    scenario = parse_scenario(scenario_yaml(workload=workload), "gate-benchmark.yaml")
    changes = workload.changes
    measured = []
    git_costs = []
    activations = []
    other_activations: list[dict[str, Any]] = []
    cpu_seconds: list[dict[str, float]] = []
    profiler = cProfile.Profile() if profile is not None else None
    for _ in range(runs):
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(), data_converter=pydantic_data_converter,
            search_attributes=search_attributes.ALL, dev_server_log_level="error")
        record = Activations(profile=profiler)
        others: dict[str, Activations] = {}
        try:
            own = _cpu(resource.getrusage(resource.RUSAGE_SELF))
            children = _cpu(resource.getrusage(resource.RUSAGE_CHILDREN))
            server = server_cpu()
            with timed_gate(record, others):
                report = await run_simulation(scenario, client=env.client, heartbeat=heartbeat)
            # Where the machine's CPU went during the run: this process (workers, activities,
            # the simulated executor and Gerrit), the git processes it ran, the dev server.
            cpu_seconds.append({
                "bench_process": round(_cpu(resource.getrusage(resource.RUSAGE_SELF)) - own, 2),
                "git_processes": round(
                    _cpu(resource.getrusage(resource.RUSAGE_CHILDREN)) - children, 2),
                "temporal_server": round(server_cpu() - server, 2),
                "elapsed": report["elapsed"],
            })
            if reports is not None:
                _keep(reports / f"run{len(measured) + 1}.json", report)
            measured.append(measure(report, changes))
            git_costs.append(await activity_seconds(env.client))
            activations.append(record.summary())
            other_activations.append({name: {k: v for k, v in a.summary().items()
                                             if k in ("count", "cpu_p50_ms", "cpu_total_s")}
                                      for name, a in sorted(others.items())})
        finally:
            await env.shutdown()
    if profiler is not None and profile is not None:
        profiler.dump_stats(str(profile))
    merge_s = statistics.median(c["prepare_state"]["p50_s"] for c in git_costs)
    # The success report and the submit are one activity now (report_and_submit).
    submit_s = statistics.median((c.get("report_and_submit") or c["submit"])["p50_s"]
                                 for c in git_costs)
    same_git = zuul_model(merge_seconds=merge_s, submit_seconds=submit_s, workload=workload)
    zuul = zuul_model(workload=workload)
    p50s = [m["p50_s"] for m in measured]
    p95s = [m["p95_s"] for m in measured]
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
        (c["workflow_task"]["total_s"] + c["activity_dispatch"]["total_s"]) / changes
        for c in git_costs
    ]
    first_broken = min(broken_changes(workload), default=changes + 1)
    undelayed_gap = [
        m["latency"][name] - same_git.latency[int(name[1:])]
        for m in measured for name in m["latency"] if int(name[1:]) < first_broken
    ]
    zuul_summary = zuul.summary()
    result = {
        "workload": workload.describe(),
        "executor_heartbeat_s": heartbeat,
        "changes": changes,
        "summary": {
            "lockmaster_p50_s": p50s,
            "lockmaster_p95_s": p95s,
            "zuul_p50_s": zuul_summary["p50_s"],
            "zuul_p95_s": zuul_summary["p95_s"],
            "p50_ratio_to_zuul": round(statistics.median(p50s) / zuul_summary["p50_s"], 3),
            "p95_ratio_to_zuul": round(statistics.median(p95s) / zuul_summary["p95_s"], 3),
            "first_quarter_p50_s": [m["first_quarter_p50_s"] for m in measured],
            "last_quarter_p50_s": [m["last_quarter_p50_s"] for m in measured],
            "zuul_quarters": quarters(zuul.latency, changes),
            "gate_activation_cpu": activations,
            # Other workflows' activations (count, CPU): the work the gate hands to them.
            "other_workflow_activation_cpu": other_activations,
            "cpu_seconds": cpu_seconds,
            "workflow_tasks": [c["workflow_task"]["count"] for c in git_costs],
            "history_events": [c["history_events"]["count"] for c in git_costs],
            "gate_runs": [c["runs"] for c in git_costs],
            "workflow_task_failures": [c["workflow_task_failures"] for c in git_costs],
            "history_bytes": [sum(c["history_bytes"].values()) for c in git_costs],
        },
        "lockmaster": [{k: v for k, v in m.items() if k != "latency"} for m in measured],
        # Per run, each merged change's approval -> merge, and the same-git-costs model's.
        "latency_by_change": [{name: round(v, 2) for name, v in m["latency"].items()}
                              for m in measured],
        "lockmaster_p50_median_s": round(statistics.median(p50s), 2),
        "zuul_model": zuul_summary,
        "merge_p50_s": round(merge_s, 3),
        # Where the time goes, per run: each activity type and the workflow tasks.
        "steps": [{name: {"count": v["count"], "p50_s": round(v["p50_s"], 3),
                          "total_s": round(v["total_s"], 3)}
                   for name, v in c.items()
                   if name not in ("runs", "workflow_task_failures", "history_bytes")}
                  for c in git_costs],
        # The gate's history, in bytes, by event type (activities: and activity type).
        "history_bytes_by_event": [c["history_bytes"] for c in git_costs],
        "report_and_submit_p50_s": round(submit_s, 3),
        "zuul_model_same_git_costs": same_git.summary(),
        "same_git_latency_by_change": {change_name(n): round(v, 2)
                                       for n, v in sorted(same_git.latency.items())},
        "p50_vs_zuul_same_git_costs": round(
            statistics.median(p50s) / same_git.summary()["p50_s"] - 1, 3),
        "serial_model": zuul_model(window=1, workload=workload).summary(),
        "ideal_model": ideal_model(workload=workload).summary(),
        "p50_vs_zuul": round(statistics.median(p50s) / zuul_summary["p50_s"] - 1, 3),
        "overhead_per_item_p50_s": round(statistics.median(overhead), 3),
        "overhead_per_item_vs_same_git_costs_p50_s": round(statistics.median(overhead_same_git),
                                                           3),
        "orchestration_seconds_per_item": [round(o, 3) for o in orchestration],
        "undelayed_gap_vs_same_git_costs_p50_s": round(statistics.median(undelayed_gap), 3)
        if undelayed_gap else None,
        "undelayed_gap_vs_same_git_costs_max_s": round(max(undelayed_gap), 3)
        if undelayed_gap else None,
    }
    path = results_path(workload)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    add_workload_arguments(parser)
    parser.add_argument("--profile", type=Path, default=None,
                        help="write a cProfile of the gate's workflow activations here")
    parser.add_argument("--reports", type=Path, default=None,
                        help="keep each run's simulation report in this directory")
    parser.add_argument("--executor-heartbeat", type=float, default=HEARTBEAT,
                        help="seconds between the simulated builds' heartbeats (simulate's "
                             "own: 0.1; real executors: 2)")
    parser.add_argument("--summary", action="store_true",
                        help="print the summary only (the whole result is in the file)")
    args = parser.parse_args()
    if args.runs < 1:
        raise SystemExit("--runs must be >= 1")
    if args.executor_heartbeat <= 0:
        raise SystemExit("--executor-heartbeat must be > 0")
    result = asyncio.run(main(args.runs, workload_from(args), args.profile,
                              args.reports, args.executor_heartbeat))
    print(json.dumps(result["summary"] if args.summary else result, indent=2))
