"""GateQueue's look-ups (pipelines/gate_lookups.py): the shortcuts a pass takes for every item
must answer exactly what the plain comparisons answer."""

from __future__ import annotations

import itertools

from lockmaster.model.build import JobSpec, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.gate import GateItem, QueueState
from lockmaster.pipelines import gate_lookups
from lockmaster.pipelines.gate_lookups import MergedKeys, same_changes
from lockmaster.pipelines.gate_queue import GateQueue, ItemLabels


def ref(number: int, patchset: int = 1, project: str = "p") -> ChangeRef:
    return ChangeRef(connection="c", project=project, branch="master", number=number,
                     patchset=patchset)


def test_a_change_is_merged_by_its_whole_key_not_its_number() -> None:
    merged = MergedKeys(["1,1", "2,3", "junk", ",", "12a,1"])
    changes = [ref(1), ref(2, 1), ref(2, 3), ref(3), ref(12)]
    assert [c.key for c in merged.unmerged(changes)] == ["2,1", "3,1", "12,1"]
    assert "2,3" in merged and "2,1" not in merged and "junk" in merged


def test_same_changes_compares_keys_in_order() -> None:
    one = [ref(1), ref(2)]
    assert same_changes(one, one)
    assert same_changes(one, [ref(1), ref(2)])  # equal keys, other objects
    assert not same_changes(one, [ref(2), ref(1)])
    assert not same_changes(one, [ref(1)])
    assert not same_changes(one, [ref(1), ref(2, 2)])
    assert same_changes([], [])


def queue(*numbers: int) -> GateQueue:
    state = QueueState(queue="q", pipeline="gate", window=0, window_floor=3,
                       window_increase_amount=1, window_decrease_factor=2)
    ids = (f"b{n}" for n in itertools.count(1))
    q = GateQueue(state, ItemLabels(), lambda: next(ids))
    jobs = [JobSpec(name="build", run="true", provides=["image"])]
    for n in numbers:
        q.enqueue(GateItem(id=f"i{n}", change=ref(n), pipeline="gate", jobs=jobs,
                           enqueued_at=float(n)))
    return q


def test_the_merged_set_follows_the_queue_merging() -> None:
    q = queue(1, 2, 3)
    assert [c.key for c in q._unmerged([ref(1), ref(2)])] == ["1,1", "2,1"]
    assert not q.merged("1,1")
    q.submit_done("1,1", True, None)  # merged: the queue's list of merged keys is new
    assert q.merged("1,1")
    assert [c.key for c in q._unmerged([ref(1), ref(2)])] == ["2,1"]
    q.state.merged_keys.append("2,1")  # edited in place: seen too
    assert q._unmerged([ref(1), ref(2)]) == []


def test_the_items_ahead_are_those_of_the_state_the_first_of_a_key() -> None:
    q = queue(1, 2, 3)
    first, _, third = q.items
    first.job_results = {"build": Result.SUCCESS}
    third.changes = [ref(1), ref(2), ref(7), ref(3)]  # 7 is in no item: skipped
    ahead = gate_lookups.ahead_jobs(q, third)
    assert [results for _, results in ahead] == [{"build": Result.SUCCESS}, {}]
    assert ahead[0][0] is first.jobs
    # Another item of the same key (another connection): the first one counts, as item().
    twin = GateItem(id="twin", change=ChangeRef(connection="other", project="p",
                                                branch="master", number=1, patchset=1),
                    pipeline="gate", jobs=[], enqueued_at=9.0)
    q.items.append(twin)
    assert gate_lookups.ahead_jobs(q, third)[0][0] is first.jobs
    assert q.item("1,1") is first
