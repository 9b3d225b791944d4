"""What the gate tested for the changes it submits (pure): the record a merged change's
publication looks up to promote the gate's package build instead of building it again.

Only successful builds that made artifacts are kept (a package build's `packages`), with the
speculative state they tested, per change; the queue keeps the last MAX_TESTED of them (they
travel in its state across continue-as-new, so they must stay small).
"""

from __future__ import annotations

from lockmaster.model.build import Result
from lockmaster.model.gate import GateItem, GateTested, GateTestedBuild, QueueState

MAX_TESTED = 50


def tested_record(item: GateItem, gate_id: str, now: float) -> GateTested | None:
    """The record of `item` as it is being submitted; None when there is nothing to promote
    (no state, or no successful build made an artifact)."""
    state = item.state
    if state is None or item.change.project not in state.projects:
        return None
    builds = [GateTestedBuild(job=b.job, build_id=b.build_id, log_url=b.log_url,
                              artifacts=list(b.artifacts))
              for b in item.builds if b.result is Result.SUCCESS and b.artifacts]
    if not builds:
        return None
    return GateTested(change=item.change, gate_id=gate_id, item_id=item.id,
                      buildset=item.buildset, changes=state.changes_key(),
                      state=state.projects[item.change.project], merge_date=state.merge_date,
                      builds=builds, recorded_at=now)


def remember(state: QueueState, record: GateTested) -> None:
    """Keep `record`, replacing an earlier one of the same change (a later enqueue tested it
    again: that is what will merge)."""
    kept = [r for r in state.tested if not _same_change(r, record.change.project,
                                                        record.change.number)]
    state.tested = [*kept, record][-MAX_TESTED:]


def find_tested(state: QueueState, project: str, number: int) -> GateTested | None:
    for record in reversed(state.tested):
        if _same_change(record, project, number):
            return record
    return None


def _same_change(record: GateTested, project: str, number: int) -> bool:
    return record.change.project == project and record.change.number == number
