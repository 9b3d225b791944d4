"""Operators' `dequeue` and `promote` on a shared queue, as pure code: the order a promote makes,
what a dequeue takes out, and why a command would change nothing (the gate workflow then rejects
its update with that reason, and `lockmaster gate dequeue|promote` exits non-zero saying it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lockmaster.model.audit import OperatorNote
from lockmaster.model.gate import DequeueRequest, GateItem

if TYPE_CHECKING:
    from lockmaster.pipelines.gate_queue import GateQueue


def promoted_order(queue: GateQueue, keys: list[str]) -> list[GateItem]:
    """The queue's items with these (`N` or `N,P`), in this order, at the head, each behind the
    changes it needs (as Zuul re-enqueues the changes ahead of a promoted one)."""
    chosen = _named(queue, keys)
    order: list[GateItem] = []

    def place(item: GateItem) -> None:
        if item in order:
            return
        for need in queue.needs.get(item.key, []):
            needed = queue.item(need)
            if needed is not None:
                place(needed)
        order.append(item)

    for item in [*chosen, *queue.items]:
        place(item)
    return order


def _named(queue: GateQueue, keys: list[str]) -> list[GateItem]:
    chosen: list[GateItem] = []
    for key in keys:
        number = key.split(",")[0]
        item = next((i for i in queue.items if str(i.change.number) == number), None)
        if item is not None and item not in chosen:
            chosen.append(item)
    return chosen


def record_promotion(queue: GateQueue, keys: list[str], note: OperatorNote | None) -> None:
    """Who promoted the items named and why (not those moved along with them)."""
    if note is not None:
        for item in _named(queue, keys):
            item.promoted_by = note


def describe(items: list[GateItem]) -> str:
    return " ".join(i.key for i in items) or "empty"


def promote_refusal(queue: GateQueue, keys: list[str]) -> str | None:
    """Why promoting `keys` would change nothing (None: it moves something)."""
    missing = []
    for key in keys:
        number, _, patchset = key.partition(",")
        item = next((i for i in queue.items if str(i.change.number) == number), None)
        if item is None:
            missing.append(f"change {number} is not in the queue")
        elif patchset and str(item.change.patchset) != patchset:
            missing.append(f"change {key} is not in the queue ({item.key} is)")
    if missing:
        return "; ".join(missing) + f" (queue: {describe(queue.items)})"
    if [i.key for i in promoted_order(queue, keys)] == [i.key for i in queue.items]:
        return f"the queue is in that order already ({describe(queue.items)})"
    return None


def dequeue_refusal(queue: GateQueue, request: DequeueRequest) -> str | None:
    """Why dequeuing the change would change nothing (None: it takes something out)."""
    item = queue.find(request.project, request.number)
    if item is not None and item.outcome is not None:
        return (f"change {item.key} passed and is being merged (it is reported {item.outcome}); "
                "too late to dequeue it")
    waiting = any(w.change.project == request.project and w.change.number == request.number
                  for w in queue.state.waiting)
    if item is None and not waiting:
        return (f"change {request.number} of {request.project} is neither in the queue nor "
                f"waiting to enter it (queue: {describe(queue.items)})")
    return None


def leaving_with(queue: GateQueue, key: str) -> list[str]:
    """The items that leave when `key` does: those needing it, transitively (in queue order)."""
    gone = {key}
    grew = True
    while grew:
        grew = False
        for item in queue.items:
            if item.key not in gone and gone & set(queue.needs.get(item.key, [])):
                gone.add(item.key)
                grew = True
    return [i.key for i in queue.items if i.key in gone and i.key != key]
