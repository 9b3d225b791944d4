"""Who did what to a shared queue, and why (issue 15): the operator's enqueue, forced or not,
promote and dequeue are recorded on the items, shown in the queue's status and current details,
and said in the reports to the change (pure code: lockmaster/pipelines, model/audit.py)."""

from __future__ import annotations

from lockmaster.model.audit import OperatorNote, attributed, note_of
from lockmaster.model.gate import DequeueRequest, EnqueueRequest
from lockmaster.pipelines.gate_view import queue_status
from lockmaster.workflows.details import queue_details
from tests.gate_harness import PROJECT, Gate, deps, info, labels, request

FORCED = "Enqueued by alice without its approvals: the release is blocked on it."


def by_operator(number: int, *, forced: bool, by: str = "alice",
                reason: str | None = "the release is blocked on it") -> EnqueueRequest:
    return request(number, ignore=forced).model_copy(update={"by": by, "reason": reason})


def unapproved(number: int) -> object:
    return deps(info(number, approvals={}))


def test_a_note_says_who_did_what_and_why() -> None:
    note = OperatorNote(by="alice", reason="R", forced=True)
    assert note.describe("enqueued") == "enqueued by alice without its approvals: R"
    assert OperatorNote(by="bob").describe("promoted") == "promoted by bob"
    assert note_of(None, "R") is None and note_of("", "R") is None
    assert note_of("bob", "") == OperatorNote(by="bob")
    assert attributed("disk full", "alice") == "alice: disk full"
    assert attributed("disk full", None) == "disk full"
    assert attributed(None, "alice") == "alice"


def test_a_forced_enqueue_is_recorded_shown_and_reported() -> None:
    gate = Gate(item_labels=labels(enqueue={}))
    gate.ask(by_operator(1, forced=True), unapproved(1))
    item = gate.item(1)
    assert item.ignore_requirements
    assert item.enqueued_by == OperatorNote(by="alice", reason="the release is blocked on it",
                                            at=0.0, forced=True)
    [view] = queue_status(gate.state, 0.0, idle=False, busy=False).items
    assert view.enqueued_by == item.enqueued_by
    assert view.operator_lines() == [
        "enqueued by alice without its approvals: the release is blocked on it"]
    # Every report about it ends saying so: the enqueue, the start, the result.
    gate.pass_all(1)
    told = gate.told(1)
    assert [action for action, _ in told] == ["enqueue", "start", "success"]
    assert all(message.endswith("\n\n" + FORCED) for _, message in told)
    assert told[-1][1].startswith("Build succeeded (gate).\n\n- merge")


def test_the_current_details_say_who_enqueued_and_promoted_an_item() -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    gate.ask(by_operator(2, forced=True), unapproved(2))
    assert gate.queue.promote(["2"], note_of("bob", "urgent", 5.0))
    details = queue_details(queue_status(gate.state, 0.0, idle=False, busy=False))
    lines = details.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("1. 2,1 p"))
    assert lines[first + 1:first + 3] == [
        "    enqueued by alice without its approvals: the release is blocked on it",
        "    promoted by bob: urgent"]
    assert "enqueued by" not in details.split("2. 1,1 p")[1]  # an approved change's: nothing


def test_an_approved_change_an_operator_enqueued_is_not_forced() -> None:
    """Not forced: it entered with its approvals, and leaves when one is taken back."""
    gate = Gate()
    gate.ask(by_operator(1, forced=False, reason=None), deps(info(1)))
    assert gate.item(1).enqueued_by == OperatorNote(by="alice", at=0.0)
    assert gate.told(1)[0] == ("start", "Starting gate jobs.\n\nEnqueued by alice.")
    gate.update(1, approvals={"Code-Review": 2})
    assert gate.order() == []


def test_an_event_enqueue_records_no_operator() -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    assert gate.item(1).enqueued_by is None
    assert gate.told(1) == [("start", "Starting gate jobs.")]


def test_a_change_waiting_for_its_needed_change_keeps_who_enqueued_it() -> None:
    gate = Gate()
    gate.ask(by_operator(2, forced=False), deps(info(1, approvals={}), info(2, 1)))
    assert gate.waiting() == [2]
    gate.ask(request(1), deps(info(1)))
    assert gate.order() == [1, 2]
    assert gate.item(2).enqueued_by is not None and gate.item(2).enqueued_by.by == "alice"


def test_a_promote_records_who_on_the_changes_named_only() -> None:
    gate = Gate()
    for n in (1, 2, 3):
        gate.ask(request(n), deps(info(n)))
    note = note_of("bob", "security fix", 7.0)
    assert gate.queue.promote(["3"], note)
    assert gate.order() == [3, 1, 2]
    assert gate.item(3).promoted_by == OperatorNote(by="bob", reason="security fix", at=7.0)
    assert gate.item(1).promoted_by is None and gate.item(2).promoted_by is None
    # A promote that moves nothing records nothing.
    assert not gate.queue.promote(["3"], note_of("carol", None, 8.0))
    assert gate.item(3).promoted_by is not None and gate.item(3).promoted_by.by == "bob"


def dequeue(gate: Gate, number: int, **fields: object) -> None:
    gate.run(gate.updates.dequeue(DequeueRequest(project=PROJECT, number=number,
                                                 **fields)))  # type: ignore[arg-type]


def test_a_dequeue_names_who_and_why_to_the_change_and_in_the_queue() -> None:
    """Without a dequeue reporter too: the change is told who took it out (no votes)."""
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    dequeue(gate, 1, by="carol", reason="breaks the nightly build")
    assert gate.order() == []
    [said] = [s for s in gate.said if s.action == "dequeue"]
    assert said.message == ("Build canceled (gate).\n\nRemoved from gate by carol: breaks the "
                            "nightly build.")
    assert said.labels == {}
    assert gate.state.left["1,1"] == "it was dequeued by carol (breaks the nightly build)"
    status = queue_status(gate.state, 0.0, idle=True, busy=False)
    assert status.recently_left == {"1,1": "it was dequeued by carol (breaks the nightly "
                                           "build)"}


def test_a_dequeue_with_a_reporter_uses_its_labels_and_says_who() -> None:
    gate = Gate(item_labels=labels(dequeue={"Verified": 0}))
    gate.ask(request(1), deps(info(1)))
    dequeue(gate, 1, by="carol", reason="no reason given")
    [said] = [s for s in gate.said if s.action == "dequeue"]
    assert said.labels == {"Verified": 0}
    assert said.message.endswith("Removed from gate by carol: no reason given.")


def test_a_dequeue_naming_no_operator_is_reported_as_before() -> None:
    """A recorded history's request (no `by`): no dequeue reporter, no report (Zuul)."""
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    dequeue(gate, 1)
    assert [s for s in gate.said if s.action == "dequeue"] == []
    assert gate.state.left["1,1"] == "it was dequeued (dequeued by an operator)"
