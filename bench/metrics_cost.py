"""Benchmark: the cost of metrics per event (issue 16).

What lockmaster adds to the work it measures, on this machine:

- per event: the router's `observe_event` (counter + intake-lag histogram), the executor's
  `observe_build` (counter + duration histogram), the launcher's `observe_launch`, each
  through `lockmaster.metrics.observe` as the code calls them, against a bare function call;
  labels drawn from a realistic spread (3 pipelines x 50 jobs x 4 results; 6 event types;
  4 providers x 2 regions);
- per Temporal SDK update: the bridge's `apply` (what draining the MetricBuffer costs for each
  update the SDK records: polls, task latencies...);
- per scrape: rendering the registry once it holds those series (plus the workflows' state
  gauges of 4 gate queues x 50 items, 10 pools x 100 nodes, 5 TE labels, from a fabricated
  snapshot: the pure part of collect-on-scrape; the status queries themselves are one query
  per long-lived workflow, as `lockmaster status` makes them).

Run: .venv/bin/python -m bench.metrics_cost (about 20 s; `--quick` for a look). Prints a
table; writes bench/results/metrics_cost.json (`--json` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest

from lockmaster import metrics
from lockmaster.metrics import domain as domain_module
from lockmaster.metrics.domain import DomainMetrics
from lockmaster.metrics.temporal_sdk import COUNTER, HISTOGRAM, SDKMetrics
from lockmaster.metrics.workflow_state import Snapshot, families, gauge_values
from lockmaster.model.gate import ItemView
from lockmaster.model.gate import QueueStatus as GateStatus
from lockmaster.model.nodes import Driver, Node, NodeState, PoolStatus
from lockmaster.model.testenv import BrokerStatus, TEState, TEView

REPO = Path(__file__).resolve().parent.parent
EVENTS = ("patchset-created", "comment-added", "change-merged", "change-abandoned",
          "change-restored", "ref-updated")
RESULTS = ("SUCCESS", "FAILURE", "NODE_FAILURE", "TIMED_OUT")


def per_call(fn: Callable[[int], None], calls: int, runs: int) -> dict[str, float]:
    """ns per call: p50 and best of `runs` runs of `calls` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn(calls)
        times.append((time.perf_counter_ns() - start) / calls)
    return {"p50_ns": statistics.median(times), "best_ns": min(times)}


@dataclass(frozen=True)
class _Metric:
    name: str
    kind: int
    description: str | None = None
    unit: str | None = None


@dataclass(frozen=True)
class _Update:
    metric: _Metric
    value: float
    attributes: dict[str, Any]


def snapshot() -> Snapshot:
    now = time.time()
    gates = [GateStatus(queue=f"q{g}", pipeline="gate", window=20, idle=False, items=[
        ItemView(change=f"{i},1", project=f"p{i % 7}", branch="master", active=i < 20,
                 failing=i % 9 == 0, changes="", merge="ok", enqueued_at=now - i * 60)
        for i in range(50)]) for g in range(4)]
    pools = [PoolStatus(provider=f"cloud{p % 4}", pool=f"pool{p}", driver=Driver.OPENSTACK,
                        enabled=True, max_servers=100, requests=[], nodes=[
                            Node(id=str(n), provider=f"cloud{p % 4}", pool=f"pool{p}",
                                 driver=Driver.OPENSTACK, labels=["jammy"],
                                 state=list(NodeState)[n % 6]) for n in range(100)])
             for p in range(10)]
    brokers = [BrokerStatus(label=f"te{b}", waiting=[], draining_hosts=[], tes=[
        TEView(key=f"h/{t}", host="h", name=str(t), state=list(TEState)[t % 5], generation=1)
        for t in range(20)]) for b in range(5)]
    return Snapshot(taken=now, gates=gates, pools=pools, brokers=brokers, checks=[],
                    check_pipelines=["check"])


def run(calls: int, runs: int) -> dict[str, Any]:
    rng = random.Random(16)
    disable_created_metrics()  # as install_process_metrics does
    registry = CollectorRegistry()
    dm = DomainMetrics(registry)
    domain_module._domain = dm  # what domain() returns in the code paths measured
    metrics.enabled = True
    builds = [(rng.choice(("check", "gate", "post")), f"job-{rng.randrange(50)}",
               rng.choice(RESULTS), rng.uniform(10, 3600)) for _ in range(4096)]
    events = [(rng.choice(EVENTS), time.time() - rng.uniform(0, 5)) for _ in range(4096)]
    launches = [(f"cloud{rng.randrange(4)}", f"Region{rng.randrange(2)}", "main",
                 rng.choice(("ok", "ok", "ok", "error")), rng.uniform(30, 300), "cloud")
                for _ in range(4096)]

    def bare(n: int) -> None:
        def nothing(*_: object) -> None:
            pass
        for i in range(n):
            nothing(*builds[i & 4095])

    def event(n: int) -> None:
        for i in range(n):
            metrics.observe_event(*events[i & 4095])

    def build(n: int) -> None:
        for i in range(n):
            metrics.observe(dm.observe_build, *builds[i & 4095])

    def launch(n: int) -> None:
        for i in range(n):
            metrics.observe(dm.observe_launch, *launches[i & 4095])

    sdk = SDKMetrics()
    kinds = [_Metric("temporal_request", COUNTER),
             _Metric("temporal_workflow_task_schedule_to_start_latency", HISTOGRAM),
             _Metric("temporal_activity_execution_latency", HISTOGRAM)]
    attrs = [{"namespace": "lockmaster", "task_queue": f"lockmaster-{q}", "operation": "Poll"}
             for q in ("orchestrator", "executor", "launcher", "publisher")]
    updates = [_Update(rng.choice(kinds), rng.uniform(0.001, 2), rng.choice(attrs))
               for _ in range(4096)]

    def sdk_apply(n: int) -> None:
        for start in range(0, n, 4096):
            sdk.apply(updates[: min(4096, n - start)])

    out: dict[str, Any] = {"calls": calls, "runs": runs, "per_call": {
        "bare function call": per_call(bare, calls, runs),
        "router: observe_event": per_call(event, calls, runs),
        "executor: observe_build": per_call(build, calls, runs),
        "launcher: observe_launch": per_call(launch, calls, runs),
        "SDK bridge: apply one update": per_call(sdk_apply, calls, runs),
    }}
    registry.register(sdk)
    snap = snapshot()
    regions = {f"cloud{i}": "RegionOne" for i in range(4)}

    class State:
        def collect(self):  # type: ignore[no-untyped-def]
            return families(gauge_values(snap, regions))

    registry.register(State())  # type: ignore[arg-type]
    scrape_ms = []
    for _ in range(max(runs, 5)):
        start = time.perf_counter()
        body = generate_latest(registry)
        scrape_ms.append((time.perf_counter() - start) * 1000)
    series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    state_ms = []
    for _ in range(max(runs, 5)):
        start = time.perf_counter()
        list(families(gauge_values(snap, regions)))
        state_ms.append((time.perf_counter() - start) * 1000)
    out["scrape"] = {"series": series, "bytes": len(body),
                     "render_ms_p50": statistics.median(scrape_ms),
                     "state_gauges_ms_p50": statistics.median(state_ms)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and runs")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" /
                        "metrics_cost.json")
    args = parser.parse_args()
    calls, runs = (20_000, 3) if args.quick else (200_000, 9)
    result = run(calls, runs)
    print(f"{'what':34} {'p50 ns/call':>12} {'best':>8}")
    for name, row in result["per_call"].items():
        print(f"{name:34} {row['p50_ns']:12.0f} {row['best_ns']:8.0f}")
    scrape = result["scrape"]
    print(f"scrape: {scrape['series']} series, {scrape['bytes'] / 1024:.0f} KiB, rendered in "
          f"{scrape['render_ms_p50']:.1f} ms (p50), of which the workflows' state gauges "
          f"{scrape['state_gauges_ms_p50']:.1f} ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
