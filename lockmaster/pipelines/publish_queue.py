"""The publish queue's decisions, free of Temporal and I/O: merged changes are published into the
stable repository one at a time, in the order their merges arrived, each as its own snapshot.

A change whose package is not there yet (its gate build looked up, or a rebuild running) holds
the changes merged after it (so the stable repository never gets a later merge's package before
an earlier one's); one that failed is passed over. Snapshot ids carry the merge order, so they
sort as they were published.
"""

from __future__ import annotations

import re

from lockmaster.model.publish import QueueEntry, QueueInput, QueueState

_FINISHED = (QueueState.DONE, QueueState.FAILED)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def snapshot_id(sequence: int, change: str) -> str:
    """`000042-hello-1234`: merge order first, then who, readable in a directory listing."""
    slug = _UNSAFE.sub("-", change.split(",")[0]).strip("-")[:60]
    return f"{sequence:06d}-{slug}"


class PublishQueue:
    def __init__(self, state: QueueInput) -> None:
        self.state = state

    def entry(self, workflow_id: str) -> QueueEntry | None:
        for entry in self.state.entries:
            if entry.workflow_id == workflow_id:
                return entry
        return None

    def enqueue(self, workflow_id: str, change: str) -> QueueEntry:
        """Idempotent: the same merge announced twice keeps its first place."""
        known = self.entry(workflow_id)
        if known is not None and known.state not in _FINISHED:
            return known
        if known is not None:  # published before; asked again (a retrigger): a new place
            self.state.entries.remove(known)
        entry = QueueEntry(workflow_id=workflow_id, change=change,
                           sequence=self.state.next_sequence)
        self.state.next_sequence += 1
        self.state.entries.append(entry)
        return entry

    def ready(self, workflow_id: str) -> bool:
        entry = self.entry(workflow_id)
        if entry is None or entry.state is not QueueState.BUILDING:
            return False
        entry.state = QueueState.READY
        return True

    def finished(self, workflow_id: str, ok: bool, snapshot: str | None, detail: str | None
                 ) -> bool:
        entry = self.entry(workflow_id)
        if entry is None or entry.state in _FINISHED:
            return False
        entry.state = QueueState.DONE if ok else QueueState.FAILED
        entry.snapshot = snapshot or entry.snapshot
        entry.detail = detail
        self._prune()
        return True

    def next_turn(self) -> QueueEntry | None:
        """The entry to publish now (marked publishing, its snapshot named), or None: one is
        publishing already, or the earliest unfinished one is still being built."""
        for entry in sorted(self.state.entries, key=lambda e: e.sequence):
            if entry.state in _FINISHED:
                continue
            if entry.state is QueueState.READY:
                entry.state = QueueState.PUBLISHING
                entry.snapshot = snapshot_id(entry.sequence, entry.change)
                return entry
            return None  # publishing, or building: everything after it waits
        return None

    def waiting_on(self) -> QueueEntry | None:
        """The entry everything else waits for (for operators)."""
        for entry in sorted(self.state.entries, key=lambda e: e.sequence):
            if entry.state not in _FINISHED:
                return entry
        return None

    def _prune(self) -> None:
        finished = [e for e in self.state.entries if e.state in _FINISHED]
        extra = len(finished) - self.state.keep_done
        if extra > 0:
            drop = {e.workflow_id for e in sorted(finished, key=lambda e: e.sequence)[:extra]}
            self.state.entries = [e for e in self.state.entries if e.workflow_id not in drop]
