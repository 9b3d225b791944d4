"""Items whose speculative state can never be built leave the queue at once, with a report,
instead of being merged again and again. (An item whose own change the queue had merged was
reset on every pass, since its state no longer held its change: the queue called the merger in
a hot loop, and nothing behind it ran.)

- Its own change is merged already (the queue merged it, and an enqueue that read the change
  before the merge put it back): nothing is left to test; it leaves with a note, no vote.
- The merger answered that no retry can build it (`PrepareStateResult.permanent`: its patchset
  ref is gone or moved, its branch is gone, the request is unusable), which no change ahead
  leaving would alter: it leaves with "Merge Failed" now, not only once it reaches the head.

A merge conflict with the changes ahead is not permanent: the item stays, failing, and is
reported when it reaches the head (Zuul); if a change ahead leaves, it may merge after all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lockmaster.model.gate import GateItem
from lockmaster.pipelines import gate_window, reports
from lockmaster.pipelines.gate_actions import Action, ReportItemAction

if TYPE_CHECKING:
    from lockmaster.pipelines.gate_queue import GateQueue

MERGED_ALREADY = "it is merged already"


def unbuildable(queue: GateQueue, item: GateItem) -> str | None:
    """Why the item's state can never be built (None: it can, or may yet)."""
    if queue.merged(item.key):
        return MERGED_ALREADY
    if item.merge == "conflict" and item.unmergeable:
        return f"it cannot be merged: {item.merge_error or 'the merger refused it'}"
    return None


def leave_if_unbuildable(queue: GateQueue, item: GateItem) -> list[Action] | None:
    """Take the item out, with its report, when its state can never be built; None: it stays."""
    why = unbuildable(queue, item)
    if why is None:
        return None
    if why == MERGED_ALREADY:
        actions = queue.remove(item)  # not `leave`: what needs it has it on the branch
        item.outcome = "merged"
        return [*actions, ReportItemAction(
            item.key, item.change, item.pipeline, "dequeue",
            reports.dequeue_report(item.pipeline, MERGED_ALREADY), {}, item_id=item.id)]
    item.outcome = "merge-conflict"
    actions = queue.leave(item, why)
    gate_window.shrink(queue.state)
    return [*actions, ReportItemAction(
        item.key, item.change, item.pipeline, "merge-conflict",
        reports.merge_conflict_report(item.pipeline, item.merge_error),
        queue.labels.failure, item_id=item.id)]


def merge_rows(count: int, longest: int) -> list[int]:
    """How `count` merges asked in one pass (a row of items after a reset, or items entering
    the window) are split into merger activities, in queue order: the item at the front alone,
    then rows doubling up to `longest` (1, 2, 4, 8, 8, ...). A row merges each state onto the one
    before it (cheap) but answers for all its items at once, so the front of the queue, whose
    builds matter first, is not kept waiting for the whole row; each row after the first
    merges the changes ahead of it once more (a few rows: O(n log n) merges, not O(n^2))."""
    sizes: list[int] = []
    size = 1
    while count > 0:
        take = min(size, count)
        sizes.append(take)
        count -= take
        size = min(size * 2, longest)
    return sizes
