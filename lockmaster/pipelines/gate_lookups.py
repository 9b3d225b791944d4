"""GateQueue's look-ups (pure): what an item's builds get from the items ahead of it (Zuul's
artifacts, the jobs whose `provides` a job's `requires` waits for), and the comparisons every
pass makes for every item (is a change merged, is an item's state still what it should be),
kept cheap: a pass runs on every wake-up of the gate workflow, for every item in the queue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lockmaster.model.build import Artifact, JobSpec, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.gate import GateItem
from lockmaster.pipelines.gate_tested import find_tested
from lockmaster.pipelines.jobgraph import upstream_jobs

if TYPE_CHECKING:
    from lockmaster.pipelines.gate_queue import GateQueue


def artifacts_for(queue: GateQueue, key: str, job: str) -> list[Artifact]:
    """What a build of `job` receives (Zuul's artifacts): those of the successful builds of
    the jobs it depends on (transitively) in this item, and of every successful build of the
    items ahead that its state includes, nearest the head first."""
    item = queue.item(key)
    if item is None:
        return []
    out: list[Artifact] = []
    for ahead_ref in item.changes[:-1]:
        ahead = queue.item(ahead_ref.key)
        if ahead is None:  # submitted while this item waited: its record has its builds
            record = find_tested(queue.state, ahead_ref.project, ahead_ref.number)
            if record is not None and record.change.key == ahead_ref.key:
                out += [a for b in record.builds for a in b.artifacts]
        elif ahead is not item:
            out += [a for b in ahead.builds if b.result is Result.SUCCESS
                    for a in b.artifacts]
    wanted = upstream_jobs(item.jobs, job)
    out += [a for b in item.builds if b.result is Result.SUCCESS and b.job in wanted
            for a in b.artifacts]
    return out


def ahead_jobs(queue: GateQueue, item: GateItem) -> list[tuple[list[JobSpec], dict[str, Result]]]:
    """The jobs and results so far of the items ahead that the item's state includes (one
    lookup table for all of them: this runs for every item on every pass that has a job with
    `requires` ready to start)."""
    by_key: dict[str, GateItem] = {}
    for other in queue.items:
        by_key.setdefault(other.key, other)  # the first of a key, as GateQueue.item
    found = (by_key.get(c.key) for c in item.changes[:-1])
    return [(i.jobs, i.job_results) for i in found if i is not None and i is not item]


class MergedKeys:
    """The queue's merged changes (`N,P` keys) as a set, with their numbers: a change whose
    number is not among them is not merged, which spares building its key."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = frozenset(keys)
        numbers = (key.split(",", 1)[0] for key in self.keys)
        self.numbers = frozenset(int(n) for n in numbers if n.isdigit())

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def unmerged(self, changes: list[ChangeRef]) -> list[ChangeRef]:
        numbers, keys = self.numbers, self.keys
        return [c for c in changes if c.number not in numbers or c.key not in keys]


def same_changes(one: Sequence[ChangeRef], other: Sequence[ChangeRef]) -> bool:
    """The same changes in the same order (by key; the same objects, usually, need no key)."""
    return len(one) == len(other) and all(
        a is b or a.key == b.key for a, b in zip(one, other, strict=True))
