"""The gate benchmark's workload and its reference models.

Workload (issue 3): 30 changes to one project approved 0.5 s apart, 10% of them broken
(project-test1 fails on any state that contains them), every job 2 s, the default layout's jobs
(project-merge, then project-test1 and project-test2).

Reference models, computed without Temporal, git or any overhead:
- zuul:   Zuul's dependent-pipeline algorithm (the same pure queue processor lockmaster runs),
          driven by a discrete-event clock where merges and reports take no time.
- serial: one change at a time (window 1).
- ideal:  every outcome known in advance: broken changes never enter; each good change is
          tested once, on top of the good changes before it.
"""

from __future__ import annotations

import heapq
import itertools
import random
import statistics
from dataclasses import dataclass, field

from lockmaster.model.build import BuildResult, JobSpec, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.gate import GateItem, QueueState
from lockmaster.model.state import PrepareStateResult, SpeculativeState
from lockmaster.pipelines.gate_queue import (
    BuildAction,
    CancelAction,
    GateQueue,
    ItemLabels,
    MergeAction,
    ReportItemAction,
)

CHANGES = 30
SPACING = 0.5
JOB_SECONDS = 2.0
BROKEN_SHARE = 0.1
JOBS = [
    JobSpec(name="project-merge", run="true"),
    JobSpec(name="project-test1", run="true", dependencies=["project-merge"]),
    JobSpec(name="project-test2", run="true", dependencies=["project-merge"]),
]
CRITICAL_PATH = 2 * JOB_SECONDS


def broken_changes(seed: int = 3) -> set[int]:
    """Which of 1..CHANGES are broken: 10%, chosen reproducibly, never the first."""
    rng = random.Random(seed)
    return set(rng.sample(range(2, CHANGES + 1), round(CHANGES * BROKEN_SHARE)))


@dataclass
class Outcome:
    latency: dict[int, float] = field(default_factory=dict)  # change -> approval to merge
    builds: int = 0

    def summary(self) -> dict[str, float]:
        values = sorted(self.latency.values())
        return {
            "merged": len(values),
            "p50_s": round(statistics.median(values), 2),
            "p95_s": round(values[min(len(values) - 1, int(0.95 * len(values)))], 2),
            "builds_per_merged_change": round(self.builds / len(values), 2),
        }


def zuul_model(window: int = 20, broken: set[int] | None = None, *, merge_seconds: float = 0.0,
               submit_seconds: float = 0.0) -> Outcome:
    """Zuul's algorithm; `merge_seconds` / `submit_seconds`: what a speculative merge and a
    report-and-submit take (0: free), to compare like with like against a measured run."""
    broken = broken_changes() if broken is None else broken
    state = QueueState(queue="q", pipeline="gate", window=window, window_floor=min(3, window),
                       window_increase_amount=1 if window > 1 else 0, window_decrease_factor=2)
    ids = (f"b{n}" for n in itertools.count())
    queue = GateQueue(state, ItemLabels(), lambda: next(ids))
    clock: list[tuple[float, int, str, object]] = []
    seq = itertools.count()
    approved: dict[int, float] = {}
    builds: dict[str, tuple[str, int]] = {}
    outcome = Outcome()
    for n in range(1, CHANGES + 1):
        heapq.heappush(clock, (n * SPACING - SPACING, next(seq), "approve", n))

    def run(now: float) -> None:
        pending = queue.process(now)
        while pending:
            action = pending.pop(0)
            if isinstance(action, MergeAction) and merge_seconds:
                heapq.heappush(clock, (now + merge_seconds, next(seq), "merge", action))
            elif isinstance(action, MergeAction):
                queue.merge_done(action.key, action.buildset, PrepareStateResult(
                    ok=True, state=SpeculativeState(changes=action.changes)))
                pending += queue.process(now)
            elif isinstance(action, BuildAction):
                outcome.builds += 1
                numbers = {int(k.split(",")[0]) for k in action.build.changes.split()}
                fails = action.job.name == "project-test1" and bool(numbers & broken)
                builds[action.build.build_id] = (action.key, action.buildset)
                heapq.heappush(clock, (now + JOB_SECONDS, next(seq), "build",
                                       (action, Result.FAILURE if fails else Result.SUCCESS)))
            elif isinstance(action, CancelAction):
                for build_id in action.build_ids:
                    key, _ = builds.pop(build_id)
                    queue.build_cancelled(key, build_id)
            elif isinstance(action, ReportItemAction) and action.submit and submit_seconds:
                heapq.heappush(clock, (now + submit_seconds, next(seq), "submit", action))
            elif isinstance(action, ReportItemAction) and action.submit:
                submitted(action, now)
                pending += queue.process(now)

    def submitted(action: ReportItemAction, now: float) -> None:
        queue.submit_done(action.key, True, None)
        number = action.change.number
        outcome.latency[number] = now - approved[number]

    while clock:
        now, _, kind, data = heapq.heappop(clock)
        if kind == "approve":
            n = int(data)  # type: ignore[call-overload]
            approved[n] = now
            change = ChangeRef(connection="c", project="p", branch="master", number=n,
                               patchset=1)
            queue.enqueue(GateItem(id=str(n), change=change, pipeline="gate", jobs=JOBS,
                                   enqueued_at=now))
        elif kind == "merge":
            merge: MergeAction = data  # type: ignore[assignment]
            queue.merge_done(merge.key, merge.buildset, PrepareStateResult(
                ok=True, state=SpeculativeState(changes=merge.changes)))
        elif kind == "submit":
            submitted(data, now)  # type: ignore[arg-type]
        else:
            action, result = data  # type: ignore[misc]
            if builds.pop(action.build.build_id, None) is None:
                continue  # cancelled
            queue.build_done(action.key, action.buildset, BuildResult(
                build_id=action.build.build_id, job=action.job.name, result=result,
                started=now - JOB_SECONDS, ended=now))
        run(now)
    return outcome


def ideal_model(broken: set[int] | None = None) -> Outcome:
    broken = broken_changes() if broken is None else broken
    outcome = Outcome()
    previous = 0.0
    for n in range(1, CHANGES + 1):
        if n in broken:
            continue
        approved = (n - 1) * SPACING
        merged = max(approved + CRITICAL_PATH, previous)
        outcome.latency[n] = merged - approved
        outcome.builds += len(JOBS)
        previous = merged
    return outcome


def scenario_yaml(broken: set[int] | None = None, time_scale: float = 1.0) -> str:
    """The same workload as a `lockmaster simulate` scenario."""
    broken = broken_changes() if broken is None else broken
    names = [f"C{n:02d}" for n in range(1, CHANGES + 1)]
    lines = ["name: gate benchmark (30 changes, 10% broken, 2 s jobs)", "changes:"]
    lines += [f"  {name}: {{project: org/project}}" for name in names]
    lines.append("events:")
    lines += [f"  - {{approve: {name}, at: {i * SPACING}}}" for i, name in enumerate(names)]
    lines.append("outcomes:")
    lines += [f"  - {{job: project-test1, change: C{n:02d}, result: FAILURE}}"
              for n in sorted(broken)]
    lines.append(f"durations: {{default: {JOB_SECONDS}}}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import json

    print(json.dumps({
        "broken": sorted(broken_changes()),
        "zuul": zuul_model().summary(),
        "serial": zuul_model(window=1).summary(),
        "ideal": ideal_model().summary(),
    }, indent=2))
