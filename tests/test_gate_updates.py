"""What a shared queue does when a change it holds (or waits with) changes in the review system,
or an operator dequeues one (lockmaster/pipelines/gate_updates.py), without Temporal."""

from __future__ import annotations

import pytest

from lockmaster.pipelines.gate_queue import DEPENDENCY_FAILED, CancelAction
from lockmaster.pipelines.reports import MISSING_REQUIREMENT
from tests.gate_harness import FAILURE, Gate, deps, info, labels, need, request

NEEDED = f"Build failed (gate).\n\n{DEPENDENCY_FAILED}\n\nChange "


def stack(gate: Gate, size: int = 3) -> None:
    """Changes 1..size, each a git child of the one before, approved together."""
    gate.ask(request(size), deps(*[info(n, *([n - 1] if n > 1 else [])) for n in
                                   range(1, size + 1)]))
    assert gate.order() == list(range(1, size + 1))


# --- a new patchset ------------------------------------------------------------------------------


def test_a_new_patchset_at_the_bottom_of_a_stack_takes_the_stack_out() -> None:
    gate = Gate()
    stack(gate)
    running = set(gate.running)
    gate.update(1, 2)
    assert gate.order() == []
    assert set(gate.cancelled) == running and gate.running == {}
    assert gate.actions_of(1) == ["start"]  # no dequeue reporter: the old patchset leaves quietly
    assert gate.told(2)[1:] == [("failure", NEEDED + "1,1 is needed: it is not the current "
                                            "patchset (patchset 2 was uploaded).")]
    # Each change names the one it needs directly (as Zuul's ported scenarios say) and the
    # outdated change at the bottom that caused it all.
    assert gate.told(3)[1:] == [("failure", NEEDED + "2,1 is needed: it depends on a change "
                                            "that failed to merge (change 1,1: it is not the "
                                            "current patchset (patchset 2 was uploaded)).")]
    assert {s.labels["Verified"] for s in gate.said if s.action == "failure"} == {-2}
    assert gate.state.left["1,1"] == "it is not the current patchset (patchset 2 was uploaded)"
    assert gate.submits == []


def test_a_new_patchset_of_the_head_resets_the_changes_behind_it() -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    gate.ask(request(2), deps(info(2)))
    assert gate.builds(2) == [("merge", "1,1 2,1")]
    gate.update(1, 2)
    assert gate.order() == [2]
    assert gate.builds(2) == [("merge", "2,1")]  # retested without the outdated 1,1
    assert gate.actions_of(2) == ["start"]


def test_without_dequeue_on_new_patchset_the_old_patchset_stays() -> None:
    gate = Gate(dequeue_on_new_patchset=False)
    stack(gate, 2)
    assert gate.update(1, 2) == []
    assert gate.order() == [1, 2] and gate.cancelled == []
    assert gate.builds(2) == [("merge", "1,1 2,1")]
    gate.pass_all(1)
    gate.pass_all(2)
    assert gate.submits == ["1,1", "2,1"]  # the tested patchsets


def test_a_late_event_of_an_older_patchset_does_nothing() -> None:
    gate = Gate()
    gate.ask(request(1, 3), deps(info(1, patchset=3)))
    assert gate.update(1, 2) == []
    assert [i.key for i in gate.state.items] == ["1,3"] and gate.cancelled == []


def test_a_new_patchset_is_reported_by_the_dequeue_reporter_once_started() -> None:
    gate = Gate(item_labels=labels(dequeue={"Verified": 0}))
    gate.ask(request(1), deps(info(1)))
    gate.update(1, 2)
    [(key, _, message, said_labels)] = [
        (s.key, s.action, s.message, s.labels) for s in gate.said if s.action == "dequeue"]
    assert (key, said_labels) == ("1,1", {"Verified": 0})
    assert message == ("Build canceled (gate).\n\nRemoved from gate: is not the current "
                       "patchset (patchset 2 was uploaded).")


def test_no_dequeue_report_without_a_reported_start() -> None:
    gate = Gate(item_labels=labels(start=None, dequeue={"Verified": 0}))
    gate.ask(request(1), deps(info(1)))
    assert gate.item(1).started_reported is False
    gate.update(1, 2)
    assert gate.order() == [] and gate.said == []


# --- abandoned, restored, merged -----------------------------------------------------------------


def test_an_abandoned_change_leaves_with_its_dependents() -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    gate.ask(request(2), deps(info(1), info(2, need(1, via="depends-on"))))
    gate.ask(request(3), deps(info(3)))
    gate.update(1, status="ABANDONED")
    assert gate.order() == [3]
    assert gate.builds(3) == [("merge", "3,1")]
    assert gate.actions_of(1) == ["start"]
    assert gate.told(2)[-1] == ("failure", NEEDED + "1,1 is needed: it was abandoned.")
    assert gate.actions_of(3) == ["start"]


def test_an_abandoned_change_is_reported_by_the_dequeue_reporter() -> None:
    gate = Gate(item_labels=labels(dequeue={}, messages={"dequeue": "Dropped."}))
    gate.ask(request(1), deps(info(1)))
    gate.update(1, status="ABANDONED")
    assert gate.told(1)[-1] == ("dequeue", "Dropped.\n\nRemoved from gate: was abandoned.")


def test_a_restored_change_enters_on_its_next_trigger_only() -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    gate.update(1, status="ABANDONED")
    assert gate.update(1) == []  # restored: open again, nothing more
    assert gate.order() == []
    gate.ask(request(1), deps(info(1)))
    assert gate.order() == [1] and gate.builds(1) == [("merge", "1,1")]


def test_a_change_merged_outside_the_queue_leaves_and_followers_keep_their_builds() -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    gate.ask(request(2), deps(info(2)))
    [(build_id, _)] = [(b, v) for b, v in gate.running.items() if v[0] == "1,1"]
    actions = gate.update(1, status="MERGED")
    assert actions == [CancelAction([build_id])]
    assert gate.order() == [2] and gate.said[-1].key == "2,1"
    assert gate.builds(2) == [("merge", "1,1 2,1")]  # not reset: 1 is in the branch now
    assert gate.state.merged_keys == ["1,1"]


def test_a_waiting_change_enters_when_its_needed_change_merges_elsewhere() -> None:
    gate = Gate()
    gate.ask(request(2), deps(info(1, approvals={}), info(2, 1)))
    assert gate.waiting() == [2]
    gate.update(1, status="MERGED")
    assert gate.order() == [2] and gate.waiting() == []


# --- requirements lost ---------------------------------------------------------------------------


def test_a_deleted_vote_takes_the_change_out_with_a_report() -> None:
    gate = Gate()
    stack(gate, 2)
    gate.ask(request(3), deps(info(3)))
    gate.update(1, approvals={"Code-Review": 2})
    assert gate.order() == [3]
    assert gate.told(1)[-1] == ("failure", f"Build failed (gate).\n\n{MISSING_REQUIREMENT}: "
                                           "Workflow 0 (needs +1).")
    assert [s.labels for s in gate.said if s.key == "1,1" and s.action == "failure"] == [FAILURE]
    assert gate.told(2)[-1] == (
        "failure", NEEDED + "1,1 is needed: it no longer meets the pipeline's requirements "
                            "(Workflow 0 (needs +1)).")
    assert gate.builds(3) == [("merge", "3,1")]


def test_a_vote_removed_above_the_requirements_changes_nothing() -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    assert gate.update(1, approvals={"Code-Review": 2, "Workflow": 1}) == []
    assert gate.order() == [1] and gate.actions_of(1) == ["start"]


def test_an_operators_enqueue_survives_a_deleted_vote() -> None:
    gate = Gate()
    gate.ask(request(1, ignore=True), deps(info(1, approvals={})))
    assert gate.update(1, approvals={}) == []
    assert gate.order() == [1] and gate.cancelled == []


@pytest.mark.parametrize(("flag", "why"), [("wip", "it is a work in progress"),
                                          ("private", "it is private")])
@pytest.mark.parametrize("ignore", [False, True], ids=["approved", "operator"])
def test_work_in_progress_or_private_takes_the_change_out(flag: str, why: str,
                                                          ignore: bool) -> None:
    gate = Gate()
    gate.ask(request(1, ignore=ignore), deps(info(1)))
    gate.ask(request(2), deps(info(2)))
    gate.update(1, **{flag: True})  # type: ignore[arg-type]
    assert gate.order() == [2]
    assert gate.told(1)[-1] == ("failure",
                                f"Build failed (gate).\n\n{MISSING_REQUIREMENT}: {why}.")
    assert gate.builds(2) == [("merge", "2,1")]


def test_news_of_a_change_being_submitted_is_ignored() -> None:
    gate = Gate()
    gate.queue.submit_in_batches = True
    gate.hold_submits = True
    gate.ask(request(1), deps(info(1)))
    gate.ask(request(2), deps(info(2)))
    gate.pass_all(2)
    gate.pass_all(1)
    assert [[r.change.key for r in b.reports] for b in gate.held] == [["1,1", "2,1"]]
    assert gate.update(2, approvals={}) == []
    assert gate.update(1, 2) == []
    assert gate.order() == [1, 2] and gate.actions_of(2) == ["start", "success"]


# --- the operator's dequeue ----------------------------------------------------------------------


def test_dequeuing_a_middle_item_resets_the_items_behind() -> None:
    gate = Gate()
    for n in (1, 2, 3):
        gate.ask(request(n), deps(info(n)))
    head = [b for b, v in gate.running.items() if v[0] == "1,1"]
    behind = [b for b, v in gate.running.items() if v[0] in ("2,1", "3,1")]
    gate.dequeue(2)
    assert gate.order() == [1, 3]
    assert sorted(gate.cancelled) == sorted(behind)
    assert head[0] in gate.running  # the head goes on
    assert gate.builds(3) == [("merge", "1,1 3,1")]
    # No dequeue reporter: nothing is said (Zuul's sendReport with no dequeue actions).
    assert gate.actions_of(2) == ["start"]


def test_dequeuing_with_a_dequeue_reporter_reports_it() -> None:
    gate = Gate(item_labels=labels(dequeue={}))
    for n in (1, 2):
        gate.ask(request(n), deps(info(n)))
    gate.dequeue(2)
    assert gate.told(2)[-1] == ("dequeue", "Build canceled (gate).\n\nRemoved from gate: "
                                           "dequeued by an operator.")
    assert gate.said[-1].labels == {}


def test_dequeuing_takes_the_changes_needing_it_out_with_a_report() -> None:
    gate = Gate(item_labels=labels(dequeue={"Verified": -1}))
    stack(gate, 2)
    gate.dequeue(1, reason="broken by design")
    assert gate.order() == []
    dequeued = gate.said[-2]
    assert (dequeued.key, dequeued.action, dequeued.labels) == ("1,1", "dequeue",
                                                                {"Verified": -1})
    assert dequeued.message == "Build canceled (gate).\n\nRemoved from gate: broken by design."
    assert gate.told(2)[-1] == ("failure", NEEDED + "1,1 is needed: it was dequeued (broken "
                                                    "by design).")


def test_a_dequeue_without_report_and_of_unknown_changes() -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    gate.dequeue(1, report=False)
    assert gate.order() == [] and gate.actions_of(1) == ["start"]
    assert gate.dequeue(7) == []


def test_dequeuing_a_waiting_change_forgets_it() -> None:
    gate = Gate()
    gate.ask(request(2), deps(info(1, approvals={}), info(2, 1)))
    assert gate.dequeue(2) == []
    assert gate.waiting() == []
    gate.ask(request(1), deps(info(1)))
    assert gate.order() == [1]


# --- waiting changes kept current ----------------------------------------------------------------


def waiting_on_1(gate: Gate, *, via: str = "parent", ignore: bool = False) -> None:
    """2 waits for 1 (unapproved; a work in progress for an operator's enqueue)."""
    blocked = info(1, wip=True) if ignore else info(1, approvals={})
    gate.ask(request(2, ignore=ignore), deps(blocked, info(2, need(1, via=via))))
    assert gate.waiting() == [2]


@pytest.mark.parametrize("change", [
    {"patchset": 2}, {"approvals": {"Code-Review": 2}}, {"wip": True}, {"private": True},
    {"status": "ABANDONED"},
], ids=["new-patchset", "vote-deleted", "wip", "private", "abandoned"])
def test_a_waiting_change_that_can_no_longer_enter_is_forgotten(
        change: dict[str, object]) -> None:
    gate = Gate()
    waiting_on_1(gate)
    gate.update(2, **change)  # type: ignore[arg-type]
    assert gate.waiting() == []
    gate.ask(request(1), deps(info(1)))
    assert gate.order() == [1]


def test_a_waiting_change_still_fit_keeps_waiting() -> None:
    gate = Gate()
    waiting_on_1(gate)
    gate.update(2)  # a comment: still approved, same patchset
    assert gate.waiting() == [2]
    gate.ask(request(1), deps(info(1)))
    assert gate.order() == [1, 2]


def test_an_operators_waiting_change_survives_a_deleted_vote() -> None:
    gate = Gate()
    waiting_on_1(gate, ignore=True)
    gate.update(2, approvals={})
    assert gate.waiting() == [2]
    gate.update(2, wip=True)
    assert gate.waiting() == []


def test_a_waiting_change_is_forgotten_when_its_needed_change_is_abandoned() -> None:
    gate = Gate()
    waiting_on_1(gate, via="depends-on")
    gate.update(1, status="ABANDONED")
    assert gate.waiting() == []


def test_a_waiting_change_built_on_an_outdated_parent_is_forgotten() -> None:
    gate = Gate()
    waiting_on_1(gate, via="parent")
    gate.update(1, 2, approvals={})
    assert gate.waiting() == []
    gate.ask(request(1, 2), deps(info(1, patchset=2)))
    assert [i.key for i in gate.state.items] == ["1,2"]


def test_a_waiting_change_follows_a_new_patchset_of_its_depends_on() -> None:
    gate = Gate()
    waiting_on_1(gate, via="depends-on")
    gate.update(1, 2, approvals={})
    [waiting] = gate.state.waiting
    assert [(n.number, n.patchset) for n in waiting.needed] == [(1, 2)]
    gate.ask(request(1, 2), deps(info(1, patchset=2)))
    assert [i.key for i in gate.state.items] == ["1,2", "2,1"]
    assert gate.state.needs["2,1"] == ["1,2"]
