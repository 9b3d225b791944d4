"""A reconfiguration of a running shared queue (lockmaster/pipelines/gate_reconfigure.py), without
Temporal: removed projects' items leave with a report, the rest proceed; new projects, changed
requirements and window settings apply; items in flight keep their frozen job graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lockmaster.model.build import JobSpec
from lockmaster.model.check import ReportLabels
from lockmaster.model.gate import FrozenJobs, GateInput, QueueReconfigure
from lockmaster.pipelines import gate_reconfigure
from lockmaster.pipelines.gate_reconfigure import current_settings, describe, reconfigure
from lockmaster.pipelines.queues import gate_input, queue_gone, queue_reconfigure
from tests.deployment import make_config
from tests.gate_harness import (
    APPROVED,
    FAILURE,
    JOBS,
    REQUIRE,
    START,
    SUCCESS,
    Gate,
    deps,
    info,
    labels,
    need,
    request,
)

NEEDED = "Build failed (gate).\n\nThis change depends on a change that failed to merge.\n\n"
REMOVED = "other was removed from queue q by a reconfiguration"


def settings(**changes: Any) -> QueueReconfigure:
    """The harness queue's own settings (queue `q` of pipeline `gate`), with `changes`."""
    base = QueueReconfigure(
        queue="q", pipeline="gate",
        labels=ReportLabels(start=START, success=SUCCESS, failure=FAILURE),
        require=dict(REQUIRE), projects=["other", "p"], window=20, window_floor=3,
        window_increase_amount=1, window_decrease_factor=2)
    return base.model_copy(update=changes)


class Running:
    """A Gate as the workflow holds it: its input (carried across continue-as-new) around the
    queue's state."""

    def __init__(self, gate: Gate, **changes: Any) -> None:
        self.gate = gate
        now = settings(**changes)
        self.inp = GateInput(state=gate.state, labels=now.labels, require=now.require,
                             projects=now.projects, branch=now.branch)

    def reconfigure(self, **changes: Any) -> list[Any]:
        return self.gate.run(reconfigure(self.inp, self.gate.updates, settings(**changes)))


def two_projects(**kwargs: Any) -> tuple[Gate, Running]:
    gate = Gate(projects=("other", "p"), **kwargs)
    return gate, Running(gate)


# --- projects -------------------------------------------------------------------------------------


def test_removing_a_project_dequeues_its_items_with_a_report_and_the_rest_proceed() -> None:
    gate, running = two_projects()
    gate.ask(request(1), deps(info(1)))
    gate.ask(request(2, project="other"), deps(info(2, project="other")))
    gate.ask(request(3), deps(info(3)))
    gate.ask(request(4), deps(info(2, project="other"),
                              info(4, need(2, project="other", via="depends-on"))))
    assert gate.order() == [1, 2, 3, 4]
    building = [b for b, (key, _, _) in gate.running.items() if key == "2,1"]
    assert building

    running.reconfigure(projects=["p"])

    assert gate.order() == [1, 3]
    assert set(building) <= set(gate.cancelled)
    [(action, message)] = gate.told(2)[1:]
    assert (action, message) == ("dequeue", f"Build canceled (gate).\n\nRemoved from gate: "
                                            f"{REMOVED}.")
    assert [s.labels for s in gate.said if s.key == "2,1" and s.action == "dequeue"] == [{}]
    # The change that needed it leaves too, naming it and why.
    assert gate.told(4)[-1] == ("failure", NEEDED + f"Change 2,1 is needed: {REMOVED}.")
    # The one behind keeps its place, tested without the removed change, and merges.
    assert gate.builds(3) == [("merge", "1,1 3,1")]
    gate.pass_all(1)
    gate.pass_all(3)
    assert gate.submits == ["1,1", "3,1"]
    assert running.inp.projects == ["p"]


def test_the_dequeue_reporter_reports_a_removed_projects_items() -> None:
    gate = Gate(projects=("other", "p"), item_labels=labels(dequeue={"Verified": 0},
                                                            messages={"dequeue": "Dropped."}))
    running = Running(gate)
    gate.ask(request(2, project="other"), deps(info(2, project="other")))
    running.reconfigure(projects=["p"], labels=ReportLabels(
        start=START, success=SUCCESS, failure=FAILURE, dequeue={"Verified": 0},
        messages={"dequeue": "Dropped."}))
    [said] = [s for s in gate.said if s.action == "dequeue"]
    assert (said.message, said.labels) == (f"Dropped.\n\nRemoved from gate: {REMOVED}.",
                                           {"Verified": 0})


def test_a_waiting_change_of_a_removed_project_is_forgotten() -> None:
    gate, running = two_projects()
    gate.ask(request(2, project="other"), deps(info(1, project="other", approvals={}),
                                               info(2, need(1, project="other"),
                                                    project="other")))
    assert gate.waiting() == [2]
    running.reconfigure(projects=["p"])
    assert gate.waiting() == [] and gate.said == []


def test_a_change_of_an_added_project_is_accepted_afterwards() -> None:
    gate = Gate(projects=("p",))
    running = Running(gate, projects=["p"])
    needing = deps(info(1, project="new"), info(2, need(1, project="new", via="depends-on")))
    gate.ask(request(2, other={}), needing)
    assert gate.actions_of(2) == ["config-error"] and gate.order() == []

    running.reconfigure(projects=["new", "p"])
    gate.ask(request(2, other={"new": FrozenJobs(jobs=JOBS)}), needing)
    assert gate.order() == [1, 2]
    assert gate.builds(2) == [("merge", "1,1 2,1")]


def test_removing_the_branch_of_a_per_branch_queue_dequeues_its_items() -> None:
    gate = Gate(branch="master")
    running = Running(gate, projects=["p"], branch="master")
    gate.ask(request(1), deps(info(1)))
    running.reconfigure(projects=["p"], branch="stable")
    assert gate.order() == []
    assert gate.told(1)[-1][1].endswith(
        "branch master of p is no longer gated in queue q (a reconfiguration).")


# --- requirements, reporters, in-flight items ----------------------------------------------------


def test_a_require_change_applies_to_the_next_enqueue() -> None:
    gate = Gate()
    running = Running(gate, projects=["p"])
    gate.ask(request(1), deps(info(1)))
    running.reconfigure(projects=["p"], require={**REQUIRE, "Verified": 1})
    assert gate.order() == [1]  # in the queue: not re-checked until its next event
    gate.ask(request(2), deps(info(2)))
    assert gate.order() == [1]  # short of Verified +1: not enqueued
    gate.ask(request(3), deps(info(3, approvals={**APPROVED, "Verified": 1})))
    assert gate.order() == [1, 3]
    # The next event of the change in the queue checks it against the new requirements.
    gate.update(1)
    assert gate.order() == [3]
    assert gate.told(1)[-1][1].endswith("missing merge requirement: Verified 0 (needs +1).")
    # Relaxed: a change without Workflow +1 enters now.
    running.reconfigure(projects=["p"], require={"Code-Review": 2})
    gate.ask(request(4), deps(info(4, approvals={"Code-Review": 2})))
    assert gate.order() == [3, 4]
    assert running.inp.require == {"Code-Review": 2}


def test_items_in_flight_keep_their_job_graph_and_builds() -> None:
    gate, running = two_projects()
    gate.ask(request(1), deps(info(1)))
    gate.finish(1, "merge")
    before = gate.item(1).model_copy(deep=True)
    builds = dict(gate.running)
    assert running.reconfigure(projects=["other", "p"], require={"Code-Review": 1}) == []
    item = gate.item(1)
    assert item.jobs == JOBS and item.jobs == before.jobs
    assert (item.buildset, item.builds, item.job_results) == (
        before.buildset, before.builds, before.job_results)
    assert gate.running == builds and gate.cancelled == []
    # A change enqueued afterwards runs the jobs its own request froze.
    lint = [JobSpec(name="lint", run="true")]
    gate.ask(request(2, jobs=lint), deps(info(2)))
    assert gate.item(2).jobs == lint and gate.item(1).jobs == JOBS


def test_reporters_and_settings_apply_to_what_happens_next() -> None:
    gate, running = two_projects()
    running.reconfigure(labels=ReportLabels(start=None, success={"Verified": 1},
                                            failure={"Verified": -1},
                                            messages={"success": "Merged, thanks."}),
                        precedence=2, dequeue_on_new_patchset=False)
    gate.ask(request(1), deps(info(1)))
    gate.pass_all(1)
    assert gate.said[-1].message.startswith("Merged, thanks.")
    assert gate.said[-1].labels == {"Verified": 1}
    assert [s.action for s in gate.said] == ["success"]  # no start reporter any more
    assert running.inp.precedence == 2 and running.inp.dequeue_on_new_patchset is False
    assert gate.updates.dequeue_on_new_patchset is False


def test_settings_for_another_queue_change_nothing() -> None:
    gate, running = two_projects()
    gate.ask(request(1, project="other"), deps(info(1, project="other")))
    change = settings(queue="elsewhere", projects=["p"])
    assert gate_reconfigure.refusal(running.inp, change) is not None
    assert reconfigure(running.inp, gate.updates, change) == []
    assert gate.order() == [1] and running.inp.projects == ["other", "p"]


# --- the window -----------------------------------------------------------------------------------


def test_a_raised_floor_opens_the_window_at_once() -> None:
    gate, running = two_projects(window=1)
    for n in (1, 2, 3):
        gate.ask(request(n), deps(info(n)))
    assert gate.builds(2) == [] and gate.builds(3) == []
    running.reconfigure(window=1, window_floor=3)
    assert gate.state.window == 3
    assert gate.builds(2) == [("merge", "1,1 2,1")]
    assert gate.builds(3) == [("merge", "1,1 2,1 3,1")]


def test_a_smaller_window_does_not_shrink_a_running_queue_as_in_zuul() -> None:
    """Zuul's test_reconfigure_window_shrink: the live window is the queue's own."""
    gate, running = two_projects()
    running.reconfigure(window=2)
    assert gate.state.window == 20 and gate.state.window_configured == 2
    running.reconfigure(window=2, window_ceiling=10)  # a ceiling caps it at once
    assert gate.state.window == 10


def test_a_fixed_window_takes_the_configured_value() -> None:
    """Zuul's test_reconfigure_window_fixed: a window that never moves is the configured one."""
    gate, running = two_projects()
    for n in (1, 2, 3):
        gate.ask(request(n), deps(info(n)))
    fixed = {"window": 1, "window_floor": 1, "window_increase_type": "exponential",
             "window_increase_amount": 1, "window_decrease_type": "exponential",
             "window_decrease_factor": 1}
    building = set(gate.running)
    running.reconfigure(**fixed)
    assert gate.state.window == 1
    # Outside the window now, but what runs is not cancelled (Zuul: "B's builds should not be
    # canceled").
    assert gate.cancelled == [] and set(gate.running) == building
    gate.ask(request(4), deps(info(4)))
    assert gate.builds(4) == []  # outside the window
    gate.pass_all(1)
    assert gate.state.window == 1  # fixed: a merge does not grow it


def test_new_window_factors_apply_to_the_next_merge() -> None:
    gate, running = two_projects()
    running.reconfigure(window_increase_amount=5)
    gate.ask(request(1), deps(info(1)))
    gate.pass_all(1)
    assert gate.state.window == 25


def test_no_limit_is_taken_and_left() -> None:
    gate, running = two_projects()
    running.reconfigure(window=0)
    assert gate.state.window == 0
    running.reconfigure(window=4)
    assert gate.state.window == 4


# --- in words -------------------------------------------------------------------------------------


def test_describe_says_what_changed_in_one_line() -> None:
    before = settings(projects=["b", "p"], require={"Verified": 1})
    after = settings(projects=["a", "p"], require={"Verified": 2}, window=10, window_floor=2,
                     precedence=1)
    assert describe(before, after) == (
        "projects +a -b; require Verified>=1 -> 2; window 20 -> 10 (the running queue keeps "
        "its live window, as in Zuul); window-floor 3 -> 2; precedence high -> normal")
    assert describe(before, before) == "no change"
    assert describe(None, after) == (
        "now projects a, p; require Verified>=2; window 10 (floor 2)")
    fixed = settings(window=5, window_increase_type="exponential", window_decrease_factor=1)
    assert describe(settings(), fixed) == (
        "window 20 -> 5; window-increase linear +1 -> exponential *1; "
        "window-decrease exponential /2 -> exponential /1")
    reporters = settings(labels=ReportLabels(start=None, success=SUCCESS, failure=FAILURE,
                                             dequeue={}), require={}, branch="stable",
                         dequeue_on_new_patchset=False, layout_projects=["x"])
    assert describe(settings(), reporters) == (
        "require -Code-Review>=2, -Workflow>=1; branch any -> stable; "
        "dequeue-on-new-patchset on -> off; reporters start, dequeue; layout projects +x")


def test_the_configuration_gives_a_queue_the_settings_it_starts_with(tmp_path: Path) -> None:
    gate_pipeline = {
        "name": "gate", "manager": "dependent", "trigger": [{"event": "comment-added"}],
        "require": {"Code-Review": 2}, "window": 8, "precedence": "normal",
        "success": {"labels": {"Verified": 2}, "submit": True},
    }
    config = make_config(
        tmp_path, pipelines=[gate_pipeline],
        projects=[{"name": n, "connection": "local", "queue": "shared",
                   "pipelines": {"gate": {"jobs": ["j"]}}} for n in ("a", "b")]
        + [{"name": "c", "connection": "local", "pipelines": {"gate": {"jobs": ["j"]}}}],
        jobs=[{"name": "j", "run": "true"}])
    pipeline = config.pipeline("gate")
    settings_now = queue_reconfigure(config, pipeline, "shared")
    assert current_settings(gate_input(config, pipeline, "shared")) == settings_now
    assert (settings_now.projects, settings_now.require, settings_now.window,
            settings_now.precedence) == (["a", "b"], {"Code-Review": 2}, 8, 1)
    assert settings_now.layout_projects == ["a", "b", "c"]
    assert queue_gone(config, "gate", "shared") is None
    assert queue_gone(config, "gate", "gone") == "no project is gated in queue gone any more"
    assert queue_gone(config, "post", "shared") == "pipeline post is no longer configured"
    assert queue_gone(config, "gate", "shared@stable") == (
        "queue shared is no longer per-branch (its changes go to shared)")
