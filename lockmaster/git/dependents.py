"""Find the open changes that need a change: Zuul's enqueueChangesBehind.

When a change enters a dependent pipeline, Zuul also enqueues, right behind it, the changes
that need it and are ready to merge (approved, current, open), then the ones needing those,
depth first, even if no event of their own arrives (approvals given before lockmaster ran, or
given while the change they need was not approved yet). The review drivers answer who needs a
change (`needed_by`: git children of its current patchset, changes whose `Depends-On:` names
it); each candidate's own dependencies are then resolved, so only a change that really needs
it, on its current patchset, is returned. The queue decides (gate_enqueue) what enters.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from lockmaster.git.cache import RepoCache
from lockmaster.git.dependencies import resolve_dependencies
from lockmaster.model.change import ChangeInfo, ChangeRef
from lockmaster.model.state import DependencyResult, DependentsRequest, DependentsResult
from lockmaster.pipelines.triggers import approvals_meet
from lockmaster.review.base import ChangeNotFound, ReviewDriver

log = logging.getLogger(__name__)

# A stack wider than this is not walked further in one event (each candidate costs a
# dependency resolution); the rest still enter on their own events.
MAX_DEPENDENTS = 50


async def find_dependents(
    request: DependentsRequest,
    drivers: Mapping[str, ReviewDriver],
    cache: RepoCache,
    known_projects: set[str],
) -> DependentsResult:
    """Changes needing `request.changes`, ready for a queue requiring `request.require`, in
    the order they enter: from the last of `request.changes` back to the first, each one's
    dependents depth first and by number (for a stack A <- B <- C entered together, C's
    children come before B's other children, then A's: Zuul's order)."""
    seen = set(request.exclude) | {_key(c) for c in request.changes}
    found: list[DependencyResult] = []

    async def walk(change: ChangeRef) -> None:
        driver = drivers.get(change.connection)
        if driver is None:
            return
        try:
            target = await driver.get_change(change.number)
        except ChangeNotFound:
            return
        if target.patchset != change.patchset:
            return  # superseded meanwhile: what needs its new patchset is not behind this one
        for info in await _candidates(drivers, target):
            key = f"{info.connection}:{info.number}"
            if key in seen or len(found) >= MAX_DEPENDENTS:
                continue
            if info.project not in known_projects or not _ready(info, request.require):
                continue
            deps = await resolve_dependencies(info.ref(), drivers, cache, known_projects)
            if not deps.ok or not any(_key(c) == _key(change) and c.patchset == change.patchset
                                      for c in deps.changes[:-1]):
                continue  # mentions the change but does not need this patchset of it
            seen.add(key)
            found.append(deps)
            await walk(deps.changes[-1])

    for change in reversed(request.changes):
        await walk(change)
    return DependentsResult(found=found)


async def _candidates(drivers: Mapping[str, ReviewDriver], target: ChangeInfo
                      ) -> list[ChangeInfo]:
    """Every connection's answer (a Depends-On may come from another review system)."""
    out: dict[tuple[str, int], ChangeInfo] = {}
    for driver in drivers.values():
        finder = getattr(driver, "needed_by", None)
        if finder is None:
            continue
        for info in await finder(target):
            out.setdefault((info.connection, info.number), info)
    return [out[k] for k in sorted(out)]


def _ready(info: ChangeInfo, require: dict[str, int]) -> bool:
    """Zuul's canMerge plus the pipeline's requirements, on what the review system says."""
    return (info.status == "NEW" and not info.wip and not info.private
            and approvals_meet(require, info.approvals))


def _key(change: ChangeRef) -> str:
    return f"{change.connection}:{change.number}"
