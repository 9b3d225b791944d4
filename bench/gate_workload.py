"""The gate benchmark's workload and its reference models.

Workload (issue 3, the default): 30 changes to one project approved 0.5 s apart, 10% of them
broken (project-test1 fails on any state that contains them), every job 2 s, the default layout's
jobs (project-merge, then project-test1 and project-test2). Issue 14's heavier one: `Workload(
changes=100, rate=2.0, broken_share=0.05)` (2 approvals a second, 5% broken).

Reference models, computed without Temporal, git or any overhead:
- zuul:   Zuul's dependent-pipeline algorithm (the same pure queue processor lockmaster runs),
          driven by a discrete-event clock where merges and reports take no time.
- serial: one change at a time (window 1).
- ideal:  every outcome known in advance: broken changes never enter; each good change is
          tested once, on top of the good changes before it.
"""

from __future__ import annotations

import argparse
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


@dataclass(frozen=True)
class Workload:
    """How many changes, approved how often, how many broken, how long each job takes."""

    changes: int = CHANGES
    spacing: float = SPACING  # seconds between approvals
    broken_share: float = BROKEN_SHARE
    job_seconds: float = JOB_SECONDS
    seed: int = 3

    @classmethod
    def at_rate(cls, changes: int, rate: float, broken_share: float,
                job_seconds: float) -> Workload:
        """`rate` approvals per second."""
        return cls(changes=changes, spacing=1.0 / rate, broken_share=broken_share,
                   job_seconds=job_seconds)

    @property
    def critical_path(self) -> float:
        return 2 * self.job_seconds

    def describe(self) -> str:
        return (f"{self.changes} changes, {1 / self.spacing:g} approvals/s, "
                f"{self.broken_share:.0%} broken, {self.job_seconds:g} s jobs")


DEFAULT = Workload()
CRITICAL_PATH = DEFAULT.critical_path


def change_name(n: int) -> str:
    return f"C{n:02d}"


def broken_changes(workload: Workload = DEFAULT) -> set[int]:
    """Which of 1..changes are broken: the workload's share, chosen reproducibly, never the
    first."""
    rng = random.Random(workload.seed)
    return set(rng.sample(range(2, workload.changes + 1),
                          round(workload.changes * workload.broken_share)))


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
               submit_seconds: float = 0.0, workload: Workload = DEFAULT) -> Outcome:
    """Zuul's algorithm; `merge_seconds` / `submit_seconds`: what a speculative merge and a
    report-and-submit take (0: free), to compare like with like against a measured run."""
    broken = broken_changes(workload) if broken is None else broken
    spacing, job_seconds = workload.spacing, workload.job_seconds
    state = QueueState(queue="q", pipeline="gate", window=window, window_floor=min(3, window),
                       window_increase_amount=1 if window > 1 else 0, window_decrease_factor=2)
    ids = (f"b{n}" for n in itertools.count())
    queue = GateQueue(state, ItemLabels(), lambda: next(ids))
    clock: list[tuple[float, int, str, object]] = []
    seq = itertools.count()
    approved: dict[int, float] = {}
    builds: dict[str, tuple[str, int]] = {}
    outcome = Outcome()
    for n in range(1, workload.changes + 1):
        heapq.heappush(clock, (n * spacing - spacing, next(seq), "approve", n))

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
                heapq.heappush(clock, (now + job_seconds, next(seq), "build",
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
                started=now - job_seconds, ended=now))
        run(now)
    return outcome


def ideal_model(broken: set[int] | None = None, *, workload: Workload = DEFAULT) -> Outcome:
    broken = broken_changes(workload) if broken is None else broken
    outcome = Outcome()
    previous = 0.0
    for n in range(1, workload.changes + 1):
        if n in broken:
            continue
        approved = (n - 1) * workload.spacing
        merged = max(approved + workload.critical_path, previous)
        outcome.latency[n] = merged - approved
        outcome.builds += len(JOBS)
        previous = merged
    return outcome


def scenario_yaml(broken: set[int] | None = None, time_scale: float = 1.0, *,
                  workload: Workload = DEFAULT) -> str:
    """The same workload as a `lockmaster simulate` scenario."""
    broken = broken_changes(workload) if broken is None else broken
    names = [change_name(n) for n in range(1, workload.changes + 1)]
    lines = [f"name: gate benchmark ({workload.describe()})", "changes:"]
    lines += [f"  {name}: {{project: org/project}}" for name in names]
    lines.append("events:")
    lines += [f"  - {{approve: {name}, at: {round(i * workload.spacing, 6)}}}"
              for i, name in enumerate(names)]
    lines.append("outcomes:")
    lines += [f"  - {{job: project-test1, change: {change_name(n)}, result: FAILURE}}"
              for n in sorted(broken)]
    lines.append(f"durations: {{default: {workload.job_seconds}}}")
    return "\n".join(lines) + "\n"


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--changes", type=int, default=CHANGES, help="changes approved")
    parser.add_argument("--rate", type=float, default=1 / SPACING,
                        help="approvals per second")
    parser.add_argument("--broken", type=float, default=BROKEN_SHARE,
                        help="share of broken changes (0.05: 5%%)")
    parser.add_argument("--build-seconds", type=float, default=JOB_SECONDS,
                        help="every job's duration")


def workload_from(args: argparse.Namespace) -> Workload:
    if args.changes < 2 or args.rate <= 0 or not 0 <= args.broken < 1 or \
            args.build_seconds <= 0:
        raise SystemExit("--changes must be >= 2, --rate and --build-seconds > 0, "
                         "--broken in [0, 1)")
    return Workload.at_rate(args.changes, args.rate, args.broken, args.build_seconds)


if __name__ == "__main__":
    import json

    parser = argparse.ArgumentParser(description="The gate benchmark's reference models.")
    add_workload_arguments(parser)
    workload = workload_from(parser.parse_args())
    print(json.dumps({
        "workload": workload.describe(),
        "broken": sorted(broken_changes(workload)),
        "zuul": zuul_model(workload=workload).summary(),
        "serial": zuul_model(window=1, workload=workload).summary(),
        "ideal": ideal_model(workload=workload).summary(),
    }, indent=2))
