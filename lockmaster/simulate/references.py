"""Cross references of a scenario: every change, job, pipeline and queue it names must exist.

Each check returns (key path, message) pairs; the loader turns them into located problems.
"""

from __future__ import annotations

from typing import Any

from lockmaster.config.models import LockmasterConfig
from lockmaster.pipelines.queues import queue_name
from lockmaster.simulate.scenario import (
    OPERATOR_EVENTS,
    EventBase,
    JobOutcome,
    PromoteEvent,
    RedeliverEvent,
    Scenario,
    SubmitOutcome,
)

Problem = tuple[tuple[Any, ...], str]


def _unknown(name: str, scenario: Scenario) -> str:
    known = ", ".join(scenario.changes) or "none"
    return f"unknown change {name!r} (changes: {known})"


def check_changes(scenario: Scenario) -> list[Problem]:
    """Parents and Depends-On name listed changes; parents form no cycle."""
    out: list[Problem] = []
    for name, spec in scenario.changes.items():
        where = ("changes", name)
        if spec.parent is not None:
            parent = scenario.changes.get(spec.parent)
            if parent is None:
                out.append(((*where, "parent"), _unknown(spec.parent, scenario)))
            elif spec.parent == name:
                out.append(((*where, "parent"), f"change {name!r} cannot be its own parent"))
            elif (parent.project, parent.branch) != (spec.project, spec.branch):
                out.append(((*where, "parent"),
                            f"parent {spec.parent!r} is on {parent.project} {parent.branch}, "
                            f"change {name!r} on {spec.project} {spec.branch}: a git parent "
                            "must be on the same project and branch"))
        for index, dep in enumerate(spec.depends_on):
            if dep not in scenario.changes:
                out.append(((*where, "depends-on", index), _unknown(dep, scenario)))
            elif dep == name:
                out.append(((*where, "depends-on", index),
                            f"change {name!r} cannot depend on itself"))
    if not out:
        out += _cycles(scenario)
    return out


def _cycles(scenario: Scenario) -> list[Problem]:
    """Git parents cannot form a cycle (no commit can be made). Depends-On cycles can: the
    footers name change numbers, and the system reports the cycle (config-error)."""
    edges = {name: [spec.parent] if spec.parent else [] for name, spec in scenario.changes.items()}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> Problem | None:
        if state.get(name) == 2:
            return None
        if state.get(name) == 1:
            cycle = " -> ".join([*path[path.index(name):], name])
            return (("changes", path[-1], "parent"), f"git parents form a cycle: {cycle}")
        state[name] = 1
        for other in edges[name]:
            found = visit(other, [*path, name])
            if found:
                return found
        state[name] = 2
        return None

    for name in edges:
        found = visit(name, [])
        if found:
            return [found]
    return []


def check_events(scenario: Scenario) -> list[Problem]:
    """Events name listed changes; `at` times never go back; a redelivery names an earlier
    event that sent a review event."""
    out: list[Problem] = []
    last_at: tuple[float, int] | None = None
    for index, event in enumerate(scenario.events):
        where = ("events", index)
        if isinstance(event, RedeliverEvent):
            earlier = scenario.events[event.redeliver] if event.redeliver < index else None
            if earlier is None or earlier.kind in (*OPERATOR_EVENTS, "settle", "redeliver"):
                out.append(((*where, "redeliver"),
                            f"redeliver names events[{event.redeliver}], which must be an "
                            "earlier review event (upload, approve, comment, ...)"))
        names = event.change_names()
        for position, name in enumerate(names):
            if name not in scenario.changes:
                loc = (*where, event.kind, position) if isinstance(event, PromoteEvent) else (
                    *where, event.kind)
                out.append((loc, _unknown(name, scenario)))
        if event.at is not None:
            if last_at is not None and event.at < last_at[0]:
                out.append(((*where, "at"),
                            f"at {event.at:g} is earlier than events[{last_at[1]}]'s at "
                            f"{last_at[0]:g}: events are applied in order"))
            last_at = (event.at, index)
    return out


def check_outcomes(scenario: Scenario) -> list[Problem]:
    out: list[Problem] = []
    for index, outcome in enumerate(scenario.outcomes):
        key = "change" if isinstance(outcome, JobOutcome) else "submit"
        name = outcome.change if isinstance(outcome, JobOutcome) else outcome.submit
        if name not in scenario.changes:
            out.append((("outcomes", index, key), _unknown(name, scenario)))
    return out


# --- against the layout ------------------------------------------------------------------------


def check_layout_references(scenario: Scenario, config: LockmasterConfig) -> list[Problem]:
    """Projects, jobs, pipelines and queues named by the scenario exist in its layout."""
    out: list[Problem] = []
    projects = [p.name for p in config.projects]
    jobs = [j.name for j in config.jobs]
    pipelines = [p.name for p in config.pipelines]
    for index, unmanaged in enumerate(scenario.unmanaged_projects):
        if config.project(unmanaged) is not None:
            out.append((("unmanaged-projects", index),
                        f"project {unmanaged!r} is in the layout: unmanaged projects are the "
                        "ones lockmaster does not know"))
    for name, spec in scenario.changes.items():
        if config.project(spec.project) is None and spec.project not in \
                scenario.unmanaged_projects:
            out.append((("changes", name, "project"),
                        f"project {spec.project!r} is not in the layout "
                        f"(projects: {', '.join(projects) or 'none'}); a project lockmaster "
                        "does not know goes under unmanaged-projects"))
    for index, outcome in enumerate(scenario.outcomes):
        if isinstance(outcome, SubmitOutcome):
            continue
        if outcome.job not in jobs:
            out.append((("outcomes", index, "job"),
                        f"job {outcome.job!r} is not in the layout "
                        f"(jobs: {', '.join(jobs) or 'none'})"))
        if outcome.pipeline is not None and outcome.pipeline not in pipelines:
            out.append((("outcomes", index, "pipeline"),
                        f"pipeline {outcome.pipeline!r} is not in the layout "
                        f"(pipelines: {', '.join(pipelines) or 'none'})"))
    for key in scenario.durations:
        if key != "default" and key not in jobs:
            out.append((("durations", key),
                        f"{key!r} is neither `default` nor a job of the layout "
                        f"(jobs: {', '.join(jobs) or 'none'})"))
    if out:
        return out
    for index, event in enumerate(scenario.events):
        if event.kind in OPERATOR_EVENTS:
            out += _operator_event(scenario, config, index, event)
    return out


def operator_pipeline(config: LockmasterConfig, event: EventBase) -> str | None:
    """The pipeline an operator event acts on: the one named, else the only dependent one."""
    named = getattr(event, "pipeline", None)
    if named is not None:
        return named
    dependent = [p.name for p in config.pipelines if p.manager == "dependent"]
    return dependent[0] if len(dependent) == 1 else None


def promote_queue(scenario: Scenario, config: LockmasterConfig, event: PromoteEvent) -> str | None:
    """The queue a promote acts on: the one named, else the promoted changes' one queue."""
    if event.queue is not None:
        return event.queue
    queues = {queue_name(config, scenario.changes[n].project) for n in event.promote}
    return queues.pop() if len(queues) == 1 else None


def _operator_event(
    scenario: Scenario, config: LockmasterConfig, index: int, event: EventBase
) -> list[Problem]:
    where = ("events", index)
    pipelines = [p.name for p in config.pipelines]
    pipeline = operator_pipeline(config, event)
    if pipeline is None:
        return [((*where, event.kind),
                 f"name the pipeline ({event.kind} events act on a pipeline; the layout has "
                 f"{', '.join(pipelines) or 'none'})")]
    if pipeline not in pipelines:
        return [((*where, "pipeline"),
                 f"pipeline {pipeline!r} is not in the layout "
                 f"(pipelines: {', '.join(pipelines) or 'none'})")]
    if isinstance(event, PromoteEvent) and promote_queue(scenario, config, event) is None:
        return [((*where, "promote"),
                 "the promoted changes are in different queues; promote within one queue "
                 "(or name it with `queue:`)")]
    return []
