"""Items whose state can never be built leave the queue with a report, and the queue never asks
the merger for the same state again and again (lockmaster/pipelines/gate_merges.py); operators'
dequeue and promote say why they would change nothing (lockmaster/pipelines/gate_commands.py)."""

from __future__ import annotations

from lockmaster.model.build import Result
from lockmaster.model.gate import DequeueRequest, GateItem
from lockmaster.model.state import PrepareStateResult, SpeculativeState
from lockmaster.pipelines.gate_actions import Action, MergeAction
from lockmaster.pipelines.gate_commands import dequeue_refusal, leaving_with, promote_refusal
from lockmaster.pipelines.gate_merges import merge_rows
from tests.gate_harness import FAILURE, JOBS, PROJECT, Gate, deps, info, ref, request

MERGED_NOTE = "Build canceled (gate).\n\nRemoved from gate: it is merged already."


def merges_asked(gate: Gate, actions: list[Action], limit: int = 30) -> int:
    """Carry out the merges `actions` and the passes after them ask for (each merge succeeds)
    until the queue asks for none; how many it asked for. A queue that spins stops at `limit`."""
    asked = 0
    pending = [a for a in actions if isinstance(a, MergeAction)]
    while pending and asked < limit:
        merge = pending.pop(0)
        asked += 1
        gate.queue.merge_done(merge.key, merge.buildset, PrepareStateResult(
            ok=True, state=SpeculativeState(changes=merge.changes)))
        pending += [a for a in gate.queue.process(0.0) if isinstance(a, MergeAction)]
    return asked


def merged_by_the_queue(gate: Gate, number: int) -> None:
    """The change enters, passes, is reported and submitted: the queue merged it."""
    gate.ask(request(number), deps(info(number)))
    gate.finish(number, "merge")
    gate.finish(number, "test")
    assert gate.submits[-1] == f"{number},1" and gate.queue.merged(f"{number},1")


def item(number: int) -> GateItem:
    return GateItem(id=f"i{number}", change=ref(number), pipeline="gate", jobs=JOBS,
                    enqueued_at=0.0)


# --- a change the queue merged --------------------------------------------------------------


def test_a_change_the_queue_merged_does_not_enter_again() -> None:
    """An enqueue (an operator's, or a second delivery of the approval) that read the change
    before the queue merged it: nothing is left to test, and nothing enters."""
    gate = Gate()
    merged_by_the_queue(gate, 1)
    said = len(gate.said)
    for operator in (False, True):
        assert gate.enqueuer.request(request(1, ignore=operator), deps(info(1)), 0.0) == []
    assert gate.order() == [] and gate.said[said:] == []


def test_an_item_whose_change_the_queue_merged_leaves_with_a_note_and_nothing_spins() -> None:
    """The livelock of issue 12: such an item was reset on every pass (its state no longer held
    its own change), so the queue asked the merger for it again and again, and the changes
    behind it were reset with it and never ran."""
    gate = Gate()
    merged_by_the_queue(gate, 1)
    gate.queue.enqueue(item(1))  # as a queue that took it in before this fix holds it
    gate.queue.enqueue(item(2))
    actions = gate.queue.process(0.0)
    assert merges_asked(gate, actions) == 1  # the change behind, once
    assert gate.order() == [2]
    assert gate.told(1)[-1] == ("dequeue", MERGED_NOTE)
    assert [s.labels for s in gate.said if s.action == "dequeue"] == [{}]  # a note, no vote
    assert [b.job for b in gate.item(2).builds] == ["merge"]  # it runs, on the branch tip
    assert [c.key for c in gate.item(2).changes] == ["2,1"]


def test_histories_recorded_before_keep_their_behaviour() -> None:
    """Versioned (workflow.patched): a queue recorded before replays as it ran, spinning."""
    gate = Gate()
    gate.queue.unbuildable_leave = False
    gate.state.merged_keys.append("1,1")
    gate.queue.enqueue(item(1))
    assert merges_asked(gate, gate.queue.process(0.0)) == 30
    assert gate.order() == [1]


# --- the merger says no retry can build it ----------------------------------------------------


def failing_merge_of(gate: Gate, key: str, *, permanent: bool) -> None:
    """The merger answers not ok for `key` (every time)."""
    merge_done = gate.queue.merge_done

    def answer(k: str, buildset: int, result: PrepareStateResult) -> None:
        if k == key:
            result = PrepareStateResult(
                ok=False, error=f"change {key}: refs/changes/02/2/1 not found",
                conflict_change=ref(int(key.split(",")[0])), permanent=permanent)
        merge_done(k, buildset, result)

    gate.queue.merge_done = answer  # type: ignore[method-assign]


def test_an_item_that_can_never_be_merged_leaves_at_once_with_merge_failed() -> None:
    gate = Gate()
    failing_merge_of(gate, "2,1", permanent=True)
    for n in (1, 2, 3):
        gate.ask(request(n), deps(info(n)))
    assert gate.order() == [1, 3]  # out now, while 1 still runs ahead of it
    [(action, message)] = gate.told(2)
    assert action == "merge-conflict"
    assert message.startswith("Merge Failed (gate).")
    assert message.endswith("change 2,1: refs/changes/02/2/1 not found")
    assert [s.labels for s in gate.said if s.key == "2,1"] == [FAILURE]
    assert gate.builds(3) == [("merge", "1,1 3,1")]
    assert gate.state.left["2,1"].startswith("it cannot be merged: change 2,1: ")


def test_a_merge_conflict_behind_the_head_waits_to_be_reported_at_the_head() -> None:
    """Not permanent: a change ahead may leave, and then it merges after all (Zuul)."""
    gate = Gate()
    failing_merge_of(gate, "2,1", permanent=False)
    for n in (1, 2, 3):
        gate.ask(request(n), deps(info(n)))
    assert gate.order() == [1, 2, 3] and gate.told(2) == []
    assert gate.builds(3) == [("merge", "1,1 3,1")]


# --- operators' commands that would change nothing ---------------------------------------------


def test_promote_says_which_change_is_not_in_the_queue_or_that_nothing_moves() -> None:
    gate = Gate()
    for n in (1, 2, 3):
        gate.ask(request(n), deps(info(n)))
    queue = gate.queue
    assert promote_refusal(queue, ["9"]) == "change 9 is not in the queue (queue: 1,1 2,1 3,1)"
    assert promote_refusal(queue, ["3,2", "7"]) == (
        "change 3,2 is not in the queue (3,1 is); change 7 is not in the queue "
        "(queue: 1,1 2,1 3,1)")
    assert promote_refusal(queue, ["1", "2,1"]) == (
        "the queue is in that order already (1,1 2,1 3,1)")
    assert promote_refusal(queue, ["3,1", "1"]) is None
    assert queue.promote(["3,1", "1"]) and gate.order() == [3, 1, 2]


def test_dequeue_says_when_the_change_is_not_there_and_names_what_leaves_with_it() -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    gate.ask(request(2), deps(info(1), info(2, 1)))
    gate.ask(request(3), deps(info(1), info(2, 1), info(3, 2)))
    gate.ask(request(5), deps(info(4, approvals={}), info(5, 4)))  # waits for 4's approval
    queue = gate.queue
    assert gate.waiting() == [5]
    assert dequeue_refusal(queue, DequeueRequest(project=PROJECT, number=5)) is None
    assert dequeue_refusal(queue, DequeueRequest(project=PROJECT, number=9)) == (
        "change 9 of p is neither in the queue nor waiting to enter it (queue: 1,1 2,1 3,1)")
    assert dequeue_refusal(queue, DequeueRequest(project="other", number=1)) is not None
    assert dequeue_refusal(queue, DequeueRequest(project=PROJECT, number=2)) is None
    assert leaving_with(queue, "1,1") == ["2,1", "3,1"]
    assert leaving_with(queue, "3,1") == []
    gate.finish(1, "merge")
    gate.finish(1, "test", Result.SUCCESS)  # reported, submitted: gone
    assert dequeue_refusal(queue, DequeueRequest(project=PROJECT, number=1)) is not None


def test_a_row_of_merges_puts_the_front_of_the_queue_first_then_doubles() -> None:
    # The front item's builds start after one merge, not after the whole row's.
    assert merge_rows(1, 8) == [1]
    assert merge_rows(2, 8) == [1, 1]
    assert merge_rows(7, 8) == [1, 2, 4]
    assert merge_rows(20, 8) == [1, 2, 4, 8, 5]
    assert merge_rows(40, 8) == [1, 2, 4, 8, 8, 8, 8, 1]
    assert merge_rows(5, 1) == [1] * 5
    assert merge_rows(0, 8) == []
    for count in range(60):
        rows = merge_rows(count, 8)
        assert sum(rows) == count and all(1 <= r <= 8 for r in rows)
