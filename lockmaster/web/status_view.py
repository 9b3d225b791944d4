"""The status page's view (/api/status), computed from what the workflows' own `status`
queries answer (pure: no Temporal, no I/O; unit-tested in tests/test_web_status_view.py).

Inputs are the answers `lockmaster status` prints (starters/status.collect: each gate queue's
QueueStatus, each check's CheckStatus), the node pools' PoolStatus and the TE brokers'
BrokerStatus (to say where a waiting job stands in their queues), and the recent durations of
jobs and the gate's reset rate (results database; the queue's own estimates when there is none).

Output: plain JSON-able dicts, documented in docs/web.md. Every estimate says what it rests on
(`basis`), and is null when there is nothing to rest it on, never a made-up number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lockmaster.config.models import LockmasterConfig
from lockmaster.leases.broker import lease_order
from lockmaster.model.build import node_holder, te_holder
from lockmaster.model.check import CheckStatus, JobStatus
from lockmaster.model.gate import JobView, QueueStatus
from lockmaster.model.nodes import PoolStatus, RequestState
from lockmaster.model.testenv import BrokerStatus
from lockmaster.model.work import StuckView
from lockmaster.nodepool.allocator import request_order
from lockmaster.pipelines.gate_view import item_phase
from lockmaster.starters.status import PipelineStatus

Json = dict[str, Any]
# Progress of a running job never shows 100 % before it has a result: an estimate is a guess.
MAX_RUNNING_PROGRESS = 0.99


@dataclass
class Estimates:
    """What estimates rest on: recent durations of each job (seconds) per (project, pipeline),
    and each gate queue's reset rate (the share of its items that recently failed and so reset
    those behind, 0..1), both from the results database."""

    job_seconds: Mapping[tuple[str, str], Mapping[str, float]] = field(default_factory=dict)
    reset_rates: Mapping[str, float] = field(default_factory=dict)
    source: str | None = None  # "results" (the results database) or None

    def duration(self, project: str, pipeline: str, job: str) -> float | None:
        found = self.job_seconds.get((project, pipeline), {}).get(job)
        return float(found) if found else None


class FilterError(ValueError):
    """A filter value that names nothing: the API answers 400 with `hint`."""

    def __init__(self, error: str, hint: str) -> None:
        super().__init__(error)
        self.hint = hint


@dataclass(frozen=True)
class Filters:
    project: str | None = None
    change: int | None = None

    @classmethod
    def parse(cls, config: LockmasterConfig, project: str | None,
              change: str | None) -> Filters:
        """From the query string: a project must be configured, a change must be a number."""
        if project is not None:
            project = project.strip()
            names = sorted(p.name for p in config.projects)
            if project and project not in names:
                raise FilterError(f"no project {project!r}",
                                  f"projects: {', '.join(names) or 'none configured'}")
        number = None
        if change is not None and change.strip():
            text = change.strip().split(",", 1)[0]
            if not text.isdigit():
                raise FilterError(f"change {change!r} is not a change number",
                                  "give the change's number, e.g. ?change=42")
            number = int(text)
        return cls(project=project or None, change=number)

    def matches(self, project: str, number: int) -> bool:
        return ((self.project is None or project == self.project)
                and (self.change is None or number == self.change))


@dataclass
class Waits:
    """Where builds wait outside the pipelines: pending node requests and TE leases, by holder
    (model/build.py: node_holder, te_holder, as the executor names them)."""

    nodes: dict[str, Json] = field(default_factory=dict)
    tes: dict[str, Json] = field(default_factory=dict)

    @classmethod
    def of(cls, pools: Sequence[PoolStatus], brokers: Sequence[BrokerStatus]) -> Waits:
        waits = cls()
        for pool in pools:
            pending = sorted((r for r in pool.requests if r.state is RequestState.PENDING),
                             key=request_order)
            for position, request in enumerate(pending):
                if request.holder:
                    waits.nodes.setdefault(request.holder, {
                        "kind": "node", "pool": f"{pool.provider}/{pool.pool}",
                        "labels": list(request.labels), "position": position,
                        "queue_length": len(pending), "since": request.arrived,
                        "text": f"waiting for a node ({' '.join(request.labels)}) from "
                                f"{pool.provider}/{pool.pool}: {_place(position, len(pending))}",
                    })
        for broker in brokers:
            waiting = sorted(broker.waiting, key=lease_order)
            for position, lease in enumerate(waiting):
                waits.tes.setdefault(lease.holder, {
                    "kind": "te", "label": broker.label, "position": position,
                    "queue_length": len(waiting), "since": lease.arrived,
                    "text": f"waiting for a TE ({broker.label}): "
                            f"{_place(position, len(waiting))}",
                })
        return waits

    def of_job(self, pipeline: str, project: str, key: str, job: str) -> Json | None:
        return (self.nodes.get(node_holder(pipeline, key, job))
                or self.tes.get(te_holder(pipeline, project, key, job)))


def _place(position: int, length: int) -> str:
    """0-based position in a queue of `length`, for people: "next of 3", "3rd of 5"."""
    if position == 0:
        return f"next in the queue ({length} waiting)"
    n = position + 1
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix} in the queue of {length}"


# --- jobs ---------------------------------------------------------------------------------------


def _job(name: str, voting: bool, state: str, attempt: int, log_url: str | None,
         reason: str | None, elapsed: float | None, estimated: float | None,
         now: float) -> Json:
    final = state.isupper()
    if final:
        remaining: float | None = 0.0
        progress: float | None = 1.0
    elif state == "running":
        remaining = max(0.0, estimated - (elapsed or 0.0)) if estimated else None
        progress = (min((elapsed or 0.0) / estimated, MAX_RUNNING_PROGRESS)
                    if estimated else None)
    else:
        remaining = estimated
        progress = 0.0
    return {
        "name": name, "voting": voting, "state": state, "final": final, "attempt": attempt,
        "log_url": log_url, "reason": reason,
        "started": (now - elapsed) if elapsed is not None and state == "running" else None,
        "elapsed": elapsed if state == "running" else None,
        "estimated": estimated, "remaining": remaining, "progress": progress,
        "waiting": None,
    }


def gate_job(job: JobView, now: float, estimates: Estimates, project: str,
             pipeline: str) -> Json:
    """The results database's recent durations first, else the queue's own running average
    (its job_seconds, which the queue puts in `estimated`). Elapsed by the wall clock: the
    queue's own `elapsed` is as of its last workflow task."""
    estimated = estimates.duration(project, pipeline, job.name) or job.estimated
    elapsed = max(0.0, now - job.started) if job.started is not None else job.elapsed
    return _job(job.name, job.voting, job.state, job.attempt, job.log_url, job.reason,
                elapsed, estimated, now)


def check_job(job: JobStatus, now: float, estimates: Estimates, project: str,
              pipeline: str) -> Json:
    elapsed = (now - job.started) if job.started is not None and job.state == "running" else None
    return _job(job.name, job.voting, job.state, job.attempt, job.log_url, job.reason,
                elapsed, estimates.duration(project, pipeline, job.name), now)


def _dependencies(config: LockmasterConfig, project: str, pipeline: str) -> dict[str, list[str]]:
    proj = config.project(project)
    ppipe = proj.pipelines.get(pipeline) if proj is not None else None
    if ppipe is None:
        return {}
    return {j.name: list(j.dependencies) for j in ppipe.project_jobs()}


def _critical_path(jobs: Sequence[Json], deps: Mapping[str, list[str]], key: str) -> float | None:
    """The longest chain of `key` ("remaining" or "estimated") through the job graph: jobs run in
    parallel except where one depends on another. None when a job that counts has no number:
    a chain with an unknown link is unknown, not shorter."""
    by_name = {j["name"]: j for j in jobs}
    if not jobs or any(j[key] is None for j in jobs):
        return None
    done: dict[str, float] = {}

    def finish(name: str, seen: frozenset[str]) -> float:
        if name in done:
            return done[name]
        job = by_name.get(name)
        own = (job[key] or 0.0) if job is not None else 0.0  # a final job's remaining is 0
        before = max((finish(d, seen | {name}) for d in deps.get(name, [])
                      if d in by_name and d not in seen), default=0.0)
        done[name] = before + own
        return done[name]

    return max(finish(j["name"], frozenset()) for j in jobs)


def _why_job(job: Json, deps: Sequence[str], jobs: Mapping[str, Json], waits: Waits,
             pipeline: str, project: str, key: str) -> Json | None:
    """Why a job that has no result is not running (or runs without doing anything yet)."""
    if job["final"]:
        return None
    found = waits.of_job(pipeline, project, key, job["name"])
    if found is not None:
        return found
    if job["state"] == "running":
        return None
    pending = [d for d in deps if d in jobs and not jobs[d]["final"]]
    if pending:
        return {"kind": "dependency", "jobs": pending,
                "text": f"waiting for {', '.join(pending)} to finish"}
    return None


# --- items --------------------------------------------------------------------------------------


def _waiting_on_resources(jobs: Sequence[Json]) -> Json | None:
    """An item none of whose jobs does anything waits for what its first waiting build waits
    for (a node, a TE): said on the item too, so the reason shows without opening it."""
    if any(j["state"] == "running" and j["waiting"] is None for j in jobs):
        return None
    return next((j["waiting"] for j in jobs
                 if j["waiting"] is not None and j["waiting"]["kind"] in ("node", "te")), None)


def _stuck_for(stuck: Sequence[StuckView], key: str) -> StuckView | None:
    """A queue's stuck work ends with the change it is about ("report and submit 12,3",
    "report start on 12,3", "merge 11,1 12,3"), or names it in its key ("merge/12,3/0")."""
    for work in stuck:
        words = work.what.split()
        if (words and words[-1] == key) or key in work.key.split("/"):
            return work
    return None


def _stuck_json(work: StuckView, now: float) -> Json:
    return {"kind": "stuck", "what": work.what, "since": work.since,
            "failures": work.failures, "error": work.error,
            "text": f"stuck: {work.what} failing for {int(now - work.since)}s "
                    f"({work.failures} round(s)): {work.error or ''}".rstrip(": ")}


def _anchor(number: int, patchset: int | None) -> str:
    return f"change-{number}" + (f"-{patchset}" if patchset is not None else "")


def _split_key(key: str) -> tuple[int, int | None]:
    number, _, patchset = key.partition(",")
    return int(number), (int(patchset) if patchset.isdigit() else None)


def gate_items(queue: QueueStatus, config: LockmasterConfig, waits: Waits,
               estimates: Estimates, now: float) -> list[Json]:
    """Every item of a gate queue, in order, with its speculative stack, jobs, why it waits and
    an estimate of when it finishes (also before its jobs start)."""
    out: list[Json] = []
    finishes: list[float | None] = []  # per item: seconds from now until it is done
    active_ahead = 0
    reset_rate = estimates.reset_rates.get(queue.queue)
    for index, item in enumerate(queue.items):
        number, patchset = _split_key(item.change)
        deps = _dependencies(config, item.project, queue.pipeline)
        jobs = [gate_job(j, now, estimates, item.project, queue.pipeline) for j in item.jobs]
        by_name = {j["name"]: j for j in jobs}
        for job in jobs:
            job["waiting"] = _why_job(job, deps.get(job["name"], []), by_name, waits,
                                      queue.pipeline, item.project, item.change)
        stack = [c for c in item.changes.split() if c != item.change]
        position = index + 1
        # Why the item waits, most important first.
        why: Json | None = None
        stuck = _stuck_for(queue.stuck, item.change)
        if stuck is not None:
            why = _stuck_json(stuck, now)
        elif not item.active:
            ahead = position - queue.window
            leave = "1 item ahead has" if ahead == 1 else f"{ahead} items ahead have"
            why = {"kind": "window", "position": position, "window": queue.window,
                   "text": f"outside the window: position {position}, window "
                           f"{queue.window}; it starts once {leave} left"}
        elif item.merge in ("none", "pending"):
            why = {"kind": "merge", "text": "waiting for the merger to prepare its state"}
        elif item.merge == "conflict":
            why = {"kind": "merge", "text": "merge conflict: " + (item.merge_error or "")}
        if why is None:
            why = _waiting_on_resources(jobs)
        remaining = _critical_path(jobs, deps, "remaining")
        duration = _critical_path(jobs, deps, "estimated")
        # Outside the window it starts when the item `window` places ahead has left.
        if item.active or queue.window <= 0:
            starts_in: float | None = 0.0
        else:
            ahead = index - queue.window
            starts_in = finishes[ahead] if 0 <= ahead < len(finishes) else None
        base = (None if remaining is None or starts_in is None
                else starts_in + (duration if not item.active and duration is not None
                                  else remaining))
        resets = None
        if base is not None and reset_rate is not None and duration is not None:
            # Each item ahead fails with the reset rate; each failure restarts this one.
            resets = reset_rate * active_ahead
            base += resets * duration
        finishes.append(base)
        if item.active:
            active_ahead += 1
        done = sum(1 for j in jobs if j["final"])
        total_jobs = len(jobs)
        progress = None
        if total_jobs and duration:
            progress = min(max(0.0, 1 - (remaining or 0.0) / duration), 1.0)
            if done < total_jobs:
                progress = min(progress, MAX_RUNNING_PROGRESS)
        elif total_jobs:
            progress = done / total_jobs
        out.append({
            "anchor": _anchor(number, patchset), "change": item.change, "number": number,
            "patchset": patchset, "project": item.project, "branch": item.branch,
            "position": position, "active": item.active, "failing": item.failing,
            "state": item_phase(item), "merge": item.merge,
            "merge_error": item.merge_error, "stack": stack, "enqueued_at": item.enqueued_at,
            "in_queue": max(0.0, now - item.enqueued_at), "operator": item.operator_lines(),
            "jobs": jobs, "waiting": why, "progress": progress,
            "estimate": {
                "remaining": base, "starts_in": starts_in, "duration": duration,
                "basis": {"position": position, "window": queue.window,
                          "active_ahead": active_ahead - (1 if item.active else 0),
                          "reset_rate": reset_rate, "expected_resets": resets,
                          "durations": {j["name"]: j["estimated"] for j in jobs},
                          "source": estimates.source or (
                              "queue" if any(j["estimated"] for j in jobs) else None)},
            },
        })
    return out


_CHECK_PHASES = {
    "resolving": "resolving its dependencies",
    "merging": "waiting for the merger to prepare its state",
    "reporting": "reporting to the review system",
}


def check_item(check: CheckStatus, config: LockmasterConfig, waits: Waits,
               estimates: Estimates, now: float) -> Json:
    change = check.change
    deps = _dependencies(config, change.project, check.pipeline)
    jobs = [check_job(j, now, estimates, change.project, check.pipeline) for j in check.jobs]
    by_name = {j["name"]: j for j in jobs}
    for job in jobs:
        job["waiting"] = _why_job(job, deps.get(job["name"], []), by_name, waits,
                                  check.pipeline, change.project, change.key)
    remaining = _critical_path(jobs, deps, "remaining")
    duration = _critical_path(jobs, deps, "estimated")
    done = sum(1 for j in jobs if j["final"])
    progress = None
    if jobs and duration:
        progress = min(max(0.0, 1 - (remaining or 0.0) / duration),
                       1.0 if done == len(jobs) else MAX_RUNNING_PROGRESS)
    elif jobs:
        progress = done / len(jobs)
    phase = _CHECK_PHASES.get(check.phase)
    return {
        "anchor": _anchor(change.number, change.patchset), "change": change.key,
        "number": change.number, "patchset": change.patchset, "project": change.project,
        "branch": change.branch, "position": 1, "active": True,
        "failing": check.result not in (None, "SUCCESS"),
        "state": check.result or check.phase, "merge": None, "merge_error": None,
        "stack": [c for c in check.changes.split() if c != change.key],
        "enqueued_at": None, "in_queue": None, "operator": [], "jobs": jobs,
        "waiting": {"kind": "phase", "text": phase} if phase else _waiting_on_resources(jobs),
        "progress": progress,
        "estimate": {"remaining": remaining, "starts_in": 0.0, "duration": duration,
                     "basis": {"position": 1, "window": 0, "active_ahead": 0,
                               "reset_rate": None, "expected_resets": None,
                               "durations": {j["name"]: j["estimated"] for j in jobs},
                               "source": estimates.source}},
    }


# --- the whole view -----------------------------------------------------------------------------


def status_view(pipelines: Sequence[PipelineStatus], config: LockmasterConfig, *,
                pools: Sequence[PoolStatus] = (), brokers: Sequence[BrokerStatus] = (),
                estimates: Estimates | None = None, filters: Filters = Filters(),
                now: float) -> Json:
    """/api/status: every pipeline with its queues and their items in order (a check pipeline's
    changes as one queue per project), filtered by project and change."""
    estimates = estimates or Estimates()
    waits = Waits.of(pools, brokers)
    out_pipelines = []
    matched = 0
    for p in pipelines:
        queues = []
        for queue in p.queues:
            # Estimates need every item ahead, so filter after computing them.
            items = [i for i in gate_items(queue, config, waits, estimates, now)
                     if filters.matches(i["project"], i["number"])]
            matched += len(items)
            queues.append({
                "name": queue.queue, "window": queue.window, "busy": queue.busy,
                "reset_rate": estimates.reset_rates.get(queue.queue),
                "idle": queue.idle, "items": items,
                "stuck": [_stuck_json(s, now) for s in queue.stuck],
                "recently_left": queue.recently_left,
                "recently_merged": queue.recently_merged,
            })
        by_project: dict[str, list[Json]] = {}
        for check in p.checks:
            if filters.matches(check.change.project, check.change.number):
                by_project.setdefault(check.change.project, []).append(
                    check_item(check, config, waits, estimates, now))
        for project, items in sorted(by_project.items()):
            for position, item in enumerate(items, start=1):
                item["position"] = position
            matched += len(items)
            queues.append({"name": project, "window": 0, "busy": False, "idle": False,
                           "reset_rate": None,
                           "items": items, "stuck": [], "recently_left": {},
                           "recently_merged": []})
        if filters.project is not None or filters.change is not None:
            queues = [q for q in queues if q["items"]]
        out_pipelines.append({"name": p.pipeline, "manager": p.manager, "queues": queues,
                              "unanswered": list(p.unanswered)})
    return {
        "generated_at": now,
        "filters": {"project": filters.project, "change": filters.change},
        "matched": matched,
        "estimates_source": estimates.source,
        "pipelines": out_pipelines,
    }


def change_entries(view: Json, number: int) -> list[Json]:
    """Every row of a change in a view (its check and its gate item may both be there)."""
    found = []
    for p in view["pipelines"]:
        for q in p["queues"]:
            for item in q["items"]:
                if item["number"] == number:
                    found.append({"pipeline": p["name"], "queue": q["name"], "item": item})
    return found
