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
from pathlib import Path
from typing import Any

from bench.gate_workload import (
    CHANGES,
    ideal_model,
    scenario_yaml,
    zuul_model,
)
from lockmaster.simulate.loading import parse_scenario
from lockmaster.simulate.runner import run_simulation


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


async def main(runs: int) -> dict[str, Any]:
    scenario = parse_scenario(scenario_yaml(), "gate-benchmark.yaml")
    measured = []
    for _ in range(runs):
        measured.append(measure(await run_simulation(scenario)))
    zuul = zuul_model()
    p50s = [m["p50_s"] for m in measured]
    # Overhead per item: each merged change's latency minus the zero-overhead model's.
    overhead = [
        m["latency"][name] - zuul.latency[int(name[1:])]
        for m in measured for name in m["latency"] if int(name[1:]) in zuul.latency
    ]
    result = {
        "changes": CHANGES,
        "lockmaster": [{k: v for k, v in m.items() if k != "latency"} for m in measured],
        "lockmaster_p50_median_s": round(statistics.median(p50s), 2),
        "zuul_model": zuul.summary(),
        "serial_model": zuul_model(window=1).summary(),
        "ideal_model": ideal_model().summary(),
        "p50_vs_zuul": round(statistics.median(p50s) / zuul.summary()["p50_s"] - 1, 3),
        "overhead_per_item_p50_s": round(statistics.median(overhead), 3),
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
