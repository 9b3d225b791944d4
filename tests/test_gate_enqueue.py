"""Which changes enter a shared queue, and when (lockmaster/pipelines/gate_enqueue.py): Zuul's
addChange, enqueueChangesAhead and enqueueChangesBehind, without Temporal."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lockmaster.model.build import JobSpec, Result
from lockmaster.model.gate import EnqueueRequest, FrozenJobs
from lockmaster.model.state import (
    DependencyInfo,
    DependencyResult,
    DependentsResult,
    PrepareStateResult,
)
from lockmaster.pipelines.duplicates import RECEIPT_TOLERANCE, same_time
from lockmaster.pipelines.gate_enqueue import (
    TRIGGER_MEMORY,
    QueuePolicy,
    legacy_infos,
    not_ready,
    unmet_requirements,
)
from lockmaster.pipelines.gate_queue import DEPENDENCY_FAILED, MergeAction, ReportItemAction
from lockmaster.pipelines.triggers import approvals_meet, needed_changes_unfit
from tests.gate_harness import (
    FAILURE,
    REQUIRE,
    Gate,
    deps,
    info,
    labels,
    need,
    ref,
    request,
)

# --- requirements ----------------------------------------------------------------------------


def test_unmet_requirements_name_each_label_below_its_minimum() -> None:
    assert unmet_requirements(REQUIRE, {"Code-Review": -1}) == [
        "Code-Review -1 (needs +2)", "Workflow 0 (needs +1)"]
    assert unmet_requirements(REQUIRE, {"Code-Review": 1, "Workflow": 1}) == [
        "Code-Review +1 (needs +2)"]
    assert unmet_requirements(REQUIRE, {"Code-Review": 2, "Workflow": 1, "Verified": -1}) == []
    assert unmet_requirements({}, {}) == []


@pytest.mark.parametrize(("change", "why"), [
    (info(1, status="ABANDONED"), "it is abandoned"),
    (info(1, status="MERGED"), "it is merged"),
    (info(1, status="ABANDONED", wip=True), "it is abandoned"),  # the status is said first
    (info(1, patchset=1, current=3), "it is not the current patchset (patchset 3 is)"),
    (info(1, wip=True, private=True), "it is a work in progress"),
    (info(1, private=True), "it is private"),
    (info(1, approvals={"Code-Review": 2}),
     "it does not meet the pipeline's requirements: Workflow 0 (needs +1)"),
    (info(1), None),
], ids=["abandoned", "merged", "abandoned-wip", "outdated", "wip", "private", "unapproved",
        "ready"])
def test_not_ready_says_why_a_change_cannot_enter(change: DependencyInfo,
                                                   why: str | None) -> None:
    assert not_ready(change, REQUIRE) == why


def test_an_operator_skips_the_approvals_but_nothing_else() -> None:
    assert not_ready(info(1, approvals={}), REQUIRE, ignore_requirements=True) is None
    assert not_ready(info(1, approvals={}, wip=True), REQUIRE,
                     ignore_requirements=True) == "it is a work in progress"


def test_approvals_meet_and_unfit_needed_changes() -> None:
    assert approvals_meet(REQUIRE, {"Code-Review": 2, "Workflow": 1})
    assert approvals_meet(REQUIRE, {"Code-Review": 2, "Workflow": 2})
    assert not approvals_meet(REQUIRE, {"Code-Review": 2})
    assert not approvals_meet(REQUIRE, {"Code-Review": 1, "Workflow": 1})
    assert approvals_meet({}, {})
    infos = [info(1, approvals={}), info(2, approvals={}, status="MERGED"), info(3),
             info(4, approvals={"Workflow": 1}), info(5, 1, 3, 4, approvals={})]
    # The change itself (last) is not judged here; merged changes need no approval.
    assert needed_changes_unfit(infos, REQUIRE) == ["1,1", "4,1"]
    assert needed_changes_unfit(infos, {}) == []
    assert needed_changes_unfit([info(1, approvals={})], REQUIRE) == []


@pytest.mark.parametrize(("branch", "project", "change_branch", "held"), [
    (None, "p", "master", True),
    (None, "p", "stable", True),  # a queue spanning branches
    (None, "other", "master", False),
    ("master", "p", "master", True),
    ("master", "p", "stable", False),  # a per-branch queue holds its branch only
    ("master", "other", "master", False),
])
def test_queue_policy_holds_its_projects_and_branch(branch: str | None, project: str,
                                                    change_branch: str, held: bool) -> None:
    policy = QueuePolicy(projects=frozenset({"p", "q"}), require={}, branch=branch)
    assert policy.holds(ref(1, project=project, branch=change_branch)) is held


def test_legacy_infos_take_needed_changes_as_current_and_unapproved() -> None:
    result = DependencyResult(ok=True, changes=[ref(1), ref(2, 3), ref(5)])
    infos = legacy_infos(result)
    assert [(i.change.key, i.current, i.approvals, i.status) for i in infos] == [
        ("1,1", True, {}, "NEW"), ("2,3", True, {}, "NEW"), ("5,1", True, {}, "NEW")]
    assert [i.needs for i in infos[:-1]] == [[], []]
    assert [(n.number, n.patchset, n.via) for n in infos[-1].needs] == [
        (1, 1, "depends-on"), (2, 3, "depends-on")]


# --- the change itself -------------------------------------------------------------------------


def test_a_change_short_of_the_requirements_is_not_enqueued_silently() -> None:
    gate = Gate()
    actions = gate.ask(request(1), deps(info(1, approvals={"Code-Review": 2})))
    assert actions == []
    assert gate.order() == [] and gate.waiting() == [] and gate.said == []


@pytest.mark.parametrize("own", [
    info(1, wip=True), info(1, private=True), info(1, patchset=1, current=2),
    info(1, status="ABANDONED"),
], ids=["wip", "private", "not-current", "abandoned"])
def test_a_change_that_cannot_merge_is_not_enqueued(own: DependencyInfo) -> None:
    gate = Gate()
    assert gate.ask(request(1), deps(own)) == []
    assert gate.order() == [] and gate.waiting() == [] and gate.said == []
    # Not even by an operator.
    assert gate.ask(request(1, ignore=True), deps(own)) == []
    assert gate.order() == []


def test_a_change_already_in_the_queue_is_not_added_twice() -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    assert gate.ask(request(1), deps(info(1))) == []
    assert gate.order() == [1]
    assert gate.enqueuer.request(request(1, 2), deps(info(1, patchset=2)), 0.0) == []
    assert [i.key for i in gate.state.items] == ["1,1"]


def test_an_unresolvable_dependency_is_a_config_error_reported_each_time() -> None:
    gate = Gate()
    broken = DependencyResult(ok=False, error="dependency cycle: 1,1 -> 2,1 -> 1,1")
    first = gate.ask(request(1), broken)
    second = gate.ask(request(1), broken)
    assert [(s.key, s.action, s.message, s.labels) for s in gate.said] == [
        ("1,1", "config-error",
         "Configuration error (gate).\n\ndependency cycle: 1,1 -> 2,1 -> 1,1", FAILURE)] * 2
    assert isinstance(first[0], ReportItemAction) and isinstance(second[0], ReportItemAction)
    assert first[0].item_id != second[0].item_id  # each refusal is its own report
    assert gate.order() == [] and gate.running == {}
    gate.ask(request(1), DependencyResult(ok=False))
    assert gate.said[-1].message == "Configuration error (gate).\n\nunknown"


def test_the_operators_enqueue_is_refused_too_when_dependencies_are_broken() -> None:
    gate = Gate()
    gate.ask(request(1, ignore=True), DependencyResult(ok=False, error="no such change"))
    assert gate.actions_of(1) == ["config-error"] and gate.order() == []


# --- needed changes that can never be gated here -------------------------------------------------


def test_a_needed_change_in_a_foreign_project_is_a_config_error_naming_it() -> None:
    gate = Gate()
    gate.ask(request(2), deps(info(1, project="elsewhere"), info(2, need(1, project="elsewhere"))))
    [said] = gate.said
    assert (said.key, said.action, said.labels) == ("2,1", "config-error", FAILURE)
    assert said.message == (
        "Configuration error (gate).\n\nThis change depends on elsewhere 1,1, which is not in "
        "this change's queue (q); it cannot be gated with it.")
    assert gate.order() == [] and gate.waiting() == []


def test_every_foreign_needed_change_is_named() -> None:
    gate = Gate(projects=("p", "lib"))
    gate.ask(request(4), deps(info(1, project="x"), info(2, project="lib"),
                              info(3, project="y"), info(4, 1, 2, 3)))
    [said] = gate.said
    assert "depends on x 1,1, y 3,1, which" in said.message
    assert gate.order() == []


def test_a_per_branch_queue_refuses_a_needed_change_of_another_branch() -> None:
    gate = Gate(branch="master")
    gate.ask(request(2), deps(info(1, branch="stable"), info(2, 1)))
    assert gate.actions_of(2) == ["config-error"]
    assert "depends on p 1,1, which is not in this change's queue" in gate.said[0].message
    assert gate.order() == []
    # The same on the queue's branch enters.
    gate.ask(request(4), deps(info(3), info(4, 3)))
    assert gate.order() == [3, 4]


def test_a_needed_change_on_an_outdated_patchset_is_a_failure_naming_it() -> None:
    gate = Gate()
    gate.ask(request(2), deps(info(1, patchset=1, current=2), info(2, 1)))
    [said] = gate.said
    assert (said.key, said.action, said.labels) == ("2,1", "failure", FAILURE)
    assert said.message == (
        f"Build failed (gate).\n\n{DEPENDENCY_FAILED}\n\nChange 1,1 is needed: it is not the "
        "current patchset (patchset 2 is); rebase this change onto it.\n"
        "  https://review.example.org/1")
    assert gate.order() == [] and gate.waiting() == []


def test_a_foreign_needed_change_is_reported_before_an_outdated_one() -> None:
    gate = Gate()
    gate.ask(request(3), deps(info(1, current=2), info(2, project="x"), info(3, 1, 2)))
    assert gate.actions_of(3) == ["config-error"]


# --- needed changes that enter first ---------------------------------------------------------


def test_approved_needed_changes_enter_first_in_dependency_order() -> None:
    gate = Gate()
    gate.ask(request(3), deps(info(1), info(2, 1), info(3, 2)))
    assert gate.order() == [1, 2, 3]
    assert gate.state.needs == {"1,1": [], "2,1": ["1,1"], "3,1": ["2,1"]}
    assert gate.builds(3) == [("merge", "1,1 2,1 3,1")]
    assert [i.jobs for i in gate.state.items] == [gate.jobs] * 3
    gate.pass_all(1)
    gate.pass_all(2)
    gate.pass_all(3)
    assert gate.submits == ["1,1", "2,1", "3,1"]


def test_a_needed_change_of_another_project_of_the_queue_runs_that_projects_jobs() -> None:
    lib_jobs = [JobSpec(name="lib-test", run="true")]
    gate = Gate(projects=("p", "lib", "docs"))
    gate.ask(request(3, fail_fast=True,
                     other={"lib": FrozenJobs(jobs=lib_jobs, fail_fast=True)}),
             deps(info(1, project="lib"), info(2, project="docs"),
                  info(3, need(1, project="lib"), need(2, project="docs"))))
    one, two, three = gate.state.items
    assert (one.change.project, one.jobs, one.fail_fast) == ("lib", lib_jobs, True)
    assert (two.change.project, two.jobs, two.fail_fast) == ("docs", [], False)
    assert (three.jobs, three.fail_fast) == (gate.jobs, True)
    assert gate.state.needs["3,1"] == ["1,1", "2,1"]


def test_a_needed_change_already_in_the_queue_is_needed_not_added() -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    gate.ask(request(5), deps(info(5)))
    gate.ask(request(2), deps(info(1), info(2, 1)))
    assert gate.order() == [1, 5, 2]
    assert gate.state.needs["2,1"] == ["1,1"]
    assert gate.builds(2) == [("merge", "1,1 5,1 2,1")]


def test_a_change_behind_a_failing_needed_change_leaves_with_it() -> None:
    jobs = [JobSpec(name="merge", run="true"), JobSpec(name="slow", run="true")]
    gate = Gate()
    gate.ask(request(1, jobs=jobs), deps(info(1)))
    gate.finish(1, "merge", Result.FAILURE)  # failing; its slow job still runs
    gate.ask(request(2, jobs=jobs), deps(info(1), info(2, 1)))
    assert gate.order() == [1, 2]
    assert gate.builds(2) == []  # it cannot merge without 1: it runs nothing
    gate.finish(1, "slow")
    assert gate.order() == []
    assert gate.told(2) == [("failure", f"Build failed (gate).\n\n{DEPENDENCY_FAILED}\n\n"
                                        "Change 1,1 is needed: it failed (gate).")]


def test_a_needed_change_merged_while_the_dependencies_were_read_is_not_enqueued_again(
) -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    gate.pass_all(1)
    assert gate.state.merged_keys == ["1,1"]
    # 2's dependencies were read before 1 merged: 1 still looks open and approved.
    gate.enqueuer.request(request(2), deps(info(1), info(2, 1)), 0.0)
    assert [i.key for i in gate.state.items] == ["2,1"]
    assert gate.state.needs["2,1"] == []


# --- waiting for needed changes --------------------------------------------------------------


def test_an_unapproved_needed_change_makes_the_stack_wait_unreported() -> None:
    gate = Gate()
    assert gate.ask(request(3), deps(info(1, approvals={}), info(2, 1), info(3, 2))) == []
    assert gate.order() == []  # 2 is approved, but 1 is not: nothing enters
    assert gate.said == []
    [waiting] = gate.state.waiting
    assert waiting.change.key == "3,1" and waiting.needs == ["1,1", "2,1"]
    assert [(n.number, n.patchset, n.via) for n in waiting.needed] == [
        (1, 1, "parent"), (2, 1, "parent")]


def test_a_waiting_change_enters_right_behind_its_needed_change() -> None:
    gate = Gate()
    gate.ask(request(9), deps(info(9)))
    gate.ask(request(2), deps(info(1, approvals={}), info(2, need(1, via="depends-on"))))
    gate.ask(request(5), deps(info(5)))  # requested while 2 waits
    assert gate.order() == [9, 5] and gate.waiting() == [2]
    assert gate.state.waiting[0].needed[0].via == "depends-on"
    gate.ask(request(1), deps(info(1)))  # 1 approved: it enters, 2 right behind it
    assert gate.order() == [9, 5, 1, 2] and gate.waiting() == []
    assert gate.state.needs["2,1"] == ["1,1"]
    gate.ask(request(7), deps(info(7)))  # anything later comes after
    assert gate.order() == [9, 5, 1, 2, 7]
    assert gate.builds(2) == [("merge", "9,1 5,1 1,1 2,1")]


def test_waiting_changes_are_released_depth_first() -> None:
    gate = Gate()
    gate.ask(request(2), deps(info(1, approvals={}), info(2, 1)))
    gate.ask(request(3), deps(info(1, approvals={}), info(2, 1), info(3, 2)))
    gate.ask(request(4), deps(info(1, approvals={}), info(4, 1)))
    assert gate.waiting() == [2, 3, 4]
    gate.ask(request(1), deps(info(1)))
    assert gate.order() == [1, 2, 3, 4] and gate.waiting() == []
    assert gate.state.needs == {"1,1": [], "2,1": ["1,1"], "3,1": ["1,1", "2,1"],
                                "4,1": ["1,1"]}


def test_a_waiting_change_enters_behind_its_needed_change_entering_for_another() -> None:
    gate = Gate()
    gate.ask(request(2), deps(info(1, approvals={}), info(2, 1)))
    # 1 is approved, and 5, needing it too, is approved before 1's own event arrives.
    gate.ask(request(5), deps(info(1), info(5, need(1, via="depends-on"))))
    assert gate.order() == [1, 2, 5]  # as Zuul's enqueueChangesBehind
    assert gate.waiting() == []


def test_a_change_waiting_on_a_parent_patchset_does_not_enter_behind_another() -> None:
    gate = Gate()
    gate.ask(request(2), deps(info(1, approvals={}), info(2, 1)))
    gate.ask(request(1, 2), deps(info(1, patchset=2)))  # 1,2 enters: 2 sits on 1,1
    assert [i.key for i in gate.state.items] == ["1,2"]
    assert gate.waiting() == [2]


def test_a_change_waiting_on_a_depends_on_enters_behind_any_patchset() -> None:
    gate = Gate()
    gate.ask(request(2), deps(info(1, approvals={}), info(2, need(1, via="depends-on"))))
    gate.ask(request(1, 2), deps(info(1, patchset=2)))
    assert [i.key for i in gate.state.items] == ["1,2", "2,1"]
    assert gate.state.needs["2,1"] == ["1,2"]


def test_a_needed_change_still_in_the_queue_on_an_older_patchset_makes_the_change_wait(
) -> None:
    gate = Gate(dequeue_on_new_patchset=False)
    gate.ask(request(1), deps(info(1)))
    gate.ask(request(2), deps(info(1, patchset=2), info(2, need(1, 2))))
    assert [i.key for i in gate.state.items] == ["1,1"]
    assert gate.waiting() == [2] and gate.said[-1].action == "start"


def test_a_later_request_of_a_waiting_change_replaces_its_entry() -> None:
    gate = Gate()
    gate.ask(request(2), deps(info(1, approvals={}), info(2, 1)))
    gate.ask(request(2), deps(info(1, approvals={}), info(3, approvals={}), info(2, 1, 3)))
    [waiting] = gate.state.waiting
    assert [n.number for n in waiting.needed] == [1, 3]


def test_a_waiting_change_is_forgotten_once_it_enters_by_its_own_request() -> None:
    gate = Gate()
    gate.ask(request(2), deps(info(1, approvals={}), info(2, need(1, via="depends-on"))))
    gate.ask(request(2), deps(info(1, status="NEW"), info(2, need(1, via="depends-on"))))
    assert gate.order() == [1, 2] and gate.waiting() == []


# --- operators, old workers, reporters ---------------------------------------------------------


def test_an_operators_enqueue_enters_without_approvals_with_its_needed_changes() -> None:
    gate = Gate()
    gate.ask(request(2, ignore=True), deps(info(1, approvals={}), info(2, 1, approvals={})))
    assert gate.order() == [1, 2]
    assert [i.ignore_requirements for i in gate.state.items] == [True, True]
    assert gate.builds(2) == [("merge", "1,1 2,1")]


def test_an_operators_enqueue_waiting_for_a_wip_needed_change_keeps_its_rights() -> None:
    gate = Gate()
    gate.ask(request(2, ignore=True), deps(info(1, wip=True), info(2, 1, approvals={})))
    assert gate.order() == [] and gate.waiting() == [2]
    gate.ask(request(1), deps(info(1)))
    assert gate.order() == [1, 2]
    assert gate.item(2).ignore_requirements and not gate.item(1).ignore_requirements


def test_an_answer_without_infos_waits_for_needed_changes_not_in_the_queue() -> None:
    gate = Gate()
    legacy = DependencyResult(ok=True, changes=[ref(1), ref(2)])
    gate.ask(request(2), legacy)
    assert gate.order() == [] and gate.waiting() == [2]
    gate.ask(request(1), DependencyResult(ok=True, changes=[ref(1)]))
    assert gate.order() == [1, 2] and gate.state.needs["2,1"] == ["1,1"]
    # Without infos the change's own approvals are not read: it enters as asked.
    gate.ask(request(3), DependencyResult(ok=True, changes=[ref(3)]))
    assert gate.order() == [1, 2, 3]


def test_the_enqueue_reporter_reports_every_change_that_enters() -> None:
    gate = Gate(item_labels=labels(enqueue={"Verified": 0}))
    gate.ask(request(2), deps(info(1), info(2, 1)))
    gate.ask(request(4), deps(info(3, approvals={}), info(4, 3)))
    assert [(s.key, s.action) for s in gate.said if s.action == "enqueue"] == [
        ("1,1", "enqueue"), ("2,1", "enqueue")]
    gate.ask(request(3), deps(info(3)))
    enqueued = [s for s in gate.said if s.action == "enqueue"]
    assert [s.key for s in enqueued] == ["1,1", "2,1", "3,1", "4,1"]
    assert {(s.message, tuple(s.labels.items())) for s in enqueued} == {
        ("Added to the gate queue.", (("Verified", 0),))}
    assert len({s.item_id for s in enqueued}) == 4


def test_the_enqueue_reporter_uses_the_pipelines_message_and_none_is_the_default() -> None:
    gate = Gate(item_labels=labels(enqueue={}, messages={"enqueue": "Queued for merging."}))
    gate.ask(request(1), deps(info(1)))
    assert gate.told(1)[0] == ("enqueue", "Queued for merging.")
    quiet = Gate()
    quiet.ask(request(1), deps(info(1)))
    assert "enqueue" not in quiet.actions_of(1)


def test_a_merge_prepared_for_the_change_is_handed_to_the_queue() -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    gate.enqueuer.request(request(2), deps(info(2)), 0.0, prepared=(
        [ref(1), ref(2)], PrepareStateResult(ok=False, error="conflict in 2,1")))
    assert gate.item(2).merge == "conflict"  # taken, not asked for again
    assert not any(isinstance(a, MergeAction) and a.key == "2,1"
                   for a in gate.queue.process(0.0))


# --- duplicate deliveries ------------------------------------------------------------------------


def test_an_event_without_identity_or_time_is_never_a_duplicate() -> None:
    gate = Gate()
    assert not gate.enqueuer.duplicate(request(1))
    assert not gate.enqueuer.duplicate(request(1, trigger="comment|1", at=None))
    assert not gate.enqueuer.duplicate(request(1, trigger="comment|1", at=None))
    assert not gate.enqueuer.duplicate(request(1, trigger="", at=5.0))
    assert gate.state.triggers == {}


def test_the_same_event_at_the_same_time_is_a_duplicate_and_a_later_one_is_not() -> None:
    gate = Gate()
    first = request(1, trigger="comment-added|1|Workflow", at=100.0, exact=True)
    assert not gate.enqueuer.duplicate(first)
    gate.ask(first, deps(info(1)))
    assert gate.enqueuer.duplicate(first)
    assert gate.enqueuer.duplicate(first.model_copy(update={"trigger_at": 100.0005}))
    gate.dequeue(1)
    # A second approval, later: a new event, and it acts.
    again = first.model_copy(update={"trigger_at": 160.0})
    assert not gate.enqueuer.duplicate(again)
    assert gate.state.triggers["comment-added|1|Workflow"] == (160.0, True)
    gate.ask(again, deps(info(1)))
    assert gate.order() == [1]
    # The first time is forgotten: only the latest delivery is remembered.
    assert not gate.enqueuer.duplicate(first)


def test_receipt_times_match_within_the_tolerance() -> None:
    gate = Gate()
    hook = request(1, trigger="t", at=100.0, exact=False)
    assert not gate.enqueuer.duplicate(hook)
    stream = request(1, trigger="t", at=100.0 + RECEIPT_TOLERANCE - 0.5, exact=True)
    assert gate.enqueuer.duplicate(stream)
    late = request(1, trigger="t", at=200.0, exact=False)
    assert not gate.enqueuer.duplicate(late)


def test_the_memory_of_triggers_is_bounded() -> None:
    gate = Gate()
    for n in range(TRIGGER_MEMORY):
        assert not gate.enqueuer.duplicate(request(1, trigger=f"t{n}", at=1.0, exact=True))
    assert gate.enqueuer.duplicate(request(1, trigger="t0", at=1.0, exact=True))
    assert not gate.enqueuer.duplicate(request(1, trigger="new", at=1.0, exact=True))
    assert len(gate.state.triggers) == TRIGGER_MEMORY
    # The oldest went (a duplicate delivery does not make it recent again).
    assert "t0" not in gate.state.triggers and "t1" in gate.state.triggers
    assert not gate.enqueuer.duplicate(request(1, trigger="t0", at=1.0, exact=True))


@pytest.mark.parametrize(("first", "first_exact", "second", "second_exact", "same"), [
    (10.0, True, 10.0, True, True),
    (10.0, True, 10.0009, True, True),
    (10.0, True, 10.01, True, False),
    (10.0, True, 11.0, True, False),
    (10.0, False, 15.0, True, True),
    (10.0, True, 15.0, False, True),
    (10.0, False, 15.01, False, False),
    (15.0, False, 10.0, False, True),
])
def test_same_time(first: float, first_exact: bool, second: float, second_exact: bool,
                   same: bool) -> None:
    assert same_time(first, first_exact, second, second_exact) is same


def test_a_needed_change_in_a_project_outside_the_layout_is_said_to_be_unknown() -> None:
    """Zuul's test_crd_gate_unknown: the report says the project is not gated (and how the
    change can enter), not that it is in another queue; another queue's change is still said
    to be foreign."""
    gate = Gate()
    gate.enqueuer.policy = replace(gate.enqueuer.policy, known=frozenset({"p", "x"}))
    gate.ask(request(3), deps(info(1, project="org/unknown"), info(2, project="x"),
                              info(3, 1, 2)))
    assert gate.actions_of(3) == ["config-error"]
    message = gate.said[0].message
    assert "depends on org/unknown 1,1, in a project lockmaster does not gate" in message
    assert "once that change has merged" in message
    assert "depends on x 2,1, which is not in this change's queue" in message
    assert gate.order() == []


# --- what the workflow looks up while a change arrives (Enqueuer.premerge / followers) --------


def test_a_change_arriving_is_premerged_onto_the_queues_tail_while_the_window_has_room() -> None:
    gate = Gate(window=2)
    assert [c.key for c in gate.enqueuer.premerge(request(1)) or []] == ["1,1"]
    gate.ask(request(1), deps(info(1)))
    assert [c.key for c in gate.enqueuer.premerge(request(2)) or []] == ["1,1", "2,1"]
    gate.ask(request(2), deps(info(2)))
    # A third would wait outside the window: merging it now would be thrown away.
    assert gate.enqueuer.premerge(request(3)) is None


def test_dependents_are_asked_for_with_the_queues_requirements_leaving_out_its_changes() -> None:
    gate = Gate(require={"Verified": 1})
    gate.ask(request(1), deps(info(1, approvals={"Verified": 1})))
    asked = gate.enqueuer.dependents_request([ref(1)])
    assert ([c.key for c in asked.changes], asked.require, asked.exclude) == (
        ["1,1"], {"Verified": 1}, ["c:1"])


def test_followers_get_their_projects_frozen_jobs_and_others_are_left_out() -> None:
    lib_jobs = [JobSpec(name="lib-test", run="true")]
    entered = request(1, other={"lib": FrozenJobs(jobs=lib_jobs, fail_fast=True)})
    found = DependentsResult(found=[deps(info(1), info(2, 1)),
                                    deps(info(1), info(3, 1, project="lib")),
                                    deps(info(1), info(4, 1, project="elsewhere"))])
    followers = gate_followers(entered, found)
    assert [(f.change.key, f.change.project, f.jobs, f.fail_fast, f.trigger)
            for f, _ in followers] == [
        ("2,1", "p", entered.jobs, False, "needs 1,1"),
        ("3,1", "lib", lib_jobs, True, "needs 1,1")]
    # Each carries the other projects' graphs for the changes it may bring along.
    assert set(followers[1][0].other_projects) == {"p"}
    assert [d.changes[-1].number for _, d in followers] == [2, 3]


def gate_followers(entered: EnqueueRequest, found: DependentsResult
                   ) -> list[tuple[EnqueueRequest, DependencyResult]]:
    return Gate(projects=("p", "lib")).enqueuer.followers(entered, found)
