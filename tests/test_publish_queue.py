"""The publish queue's decisions (pure): merge order, one at a time, failures passed over."""

from __future__ import annotations

from lockmaster.model.publish import QueueInput, QueueState
from lockmaster.pipelines.publish_queue import PublishQueue, snapshot_id


def queue(*names: str) -> PublishQueue:
    q = PublishQueue(QueueInput())
    for name in names:
        q.enqueue(f"publish/{name}", f"{name} 1,1")
    return q


def test_turns_follow_merge_order_even_when_later_builds_finish_first() -> None:
    q = queue("a", "b", "c")
    q.ready("publish/c")
    q.ready("publish/b")
    assert q.next_turn() is None  # a (merged first) is still building: everyone waits
    q.ready("publish/a")
    first = q.next_turn()
    assert first is not None and first.workflow_id == "publish/a"
    assert first.snapshot == "000001-a-1"
    assert q.next_turn() is None  # one publication at a time
    q.finished("publish/a", True, first.snapshot, None)
    second = q.next_turn()
    assert second is not None and second.workflow_id == "publish/b"
    q.finished("publish/b", True, second.snapshot, None)
    third = q.next_turn()
    assert third is not None and third.snapshot == "000003-c-1"


def test_a_failed_change_is_passed_over() -> None:
    q = queue("a", "b")
    q.ready("publish/b")
    q.finished("publish/a", False, None, "build failed")
    turn = q.next_turn()
    assert turn is not None and turn.workflow_id == "publish/b"
    entry = q.entry("publish/a")
    assert entry is not None and entry.state is QueueState.FAILED


def test_duplicates_keep_their_place_and_retriggers_get_a_new_one() -> None:
    q = queue("a", "b")
    q.enqueue("publish/a", "a 1,1")  # the same merge announced twice
    assert [e.workflow_id for e in q.state.entries] == ["publish/a", "publish/b"]
    q.ready("publish/a")
    turn = q.next_turn()
    assert turn is not None
    q.finished("publish/a", True, turn.snapshot, None)
    assert not q.finished("publish/a", True, turn.snapshot, None)  # once
    again = q.enqueue("publish/a", "a 1,1")  # retriggered: behind b now
    assert again.sequence == 3 and again.state is QueueState.BUILDING
    assert q.waiting_on() is not None and q.waiting_on().workflow_id == "publish/b"


def test_finished_entries_are_pruned_beyond_the_limit() -> None:
    q = PublishQueue(QueueInput(keep_done=2))
    for i in range(5):
        q.enqueue(f"publish/p{i}", f"p{i} {i},1")
        q.ready(f"publish/p{i}")
        turn = q.next_turn()
        assert turn is not None
        q.finished(turn.workflow_id, True, turn.snapshot, None)
    assert [e.workflow_id for e in q.state.entries] == ["publish/p3", "publish/p4"]
    assert q.state.next_sequence == 6


def test_snapshot_ids_sort_in_merge_order_and_are_safe_names() -> None:
    assert snapshot_id(7, "org/pkg 12,3") == "000007-org-pkg-12"
    assert sorted([snapshot_id(10, "b 1,1"), snapshot_id(9, "a 1,1")]) == [
        "000009-a-1", "000010-b-1"]
