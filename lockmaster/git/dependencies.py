"""Resolve a change's Depends-On footers, transitively, into a merge order."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from lockmaster.git.cache import RefNotFound, RepoCache, RevisionNotFound
from lockmaster.git.footers import DependsOn, depends_on
from lockmaster.model.change import ChangeInfo, ChangeRef
from lockmaster.model.state import DependencyInfo, DependencyResult, NeededChange
from lockmaster.review.base import ChangeNotFound, ReviewDriver

_STATUS_RANK = {"NEW": 0, "MERGED": 1, "ABANDONED": 2}


class _Unresolvable(Exception):
    """Ends resolution with ok=False; review-system outages raise instead (to be retried)."""


async def resolve_dependencies(
    change: ChangeRef,
    drivers: Mapping[str, ReviewDriver],
    cache: RepoCache,
    known_projects: set[str],
) -> DependencyResult:
    """Changes to merge for `change`: its open git parents and Depends-On changes, depth-first,
    each once, dependencies before dependents, `change` last. Depends-On changes are taken at
    their current patchset, git parents at the patchset the change's commit sits on (Zuul: a
    change built on an outdated patchset needs that patchset, which can no longer merge);
    merged ones are skipped (the branch has them). Listing parents matters to the gate: a
    stacked change must not merge (dragging its parent in untested) unless its parent is ahead
    of it. Each change comes with what the review system says of it now (`infos`).
    """
    resolver = _Resolver(drivers, cache, known_projects)
    try:
        await resolver.visit(change, [], await resolver.info_of(change))
    except _Unresolvable as exc:
        return DependencyResult(ok=False, error=str(exc))
    return DependencyResult(ok=True, changes=resolver.order, infos=resolver.infos)


class _Resolver:
    def __init__(self, drivers: Mapping[str, ReviewDriver], cache: RepoCache,
                 known_projects: set[str]) -> None:
        self.drivers = drivers
        self.cache = cache
        self.known_projects = known_projects
        self.order: list[ChangeRef] = []
        self.infos: list[DependencyInfo] = []
        self._done: set[tuple[str, int]] = set()

    async def info_of(self, change: ChangeRef) -> ChangeInfo | None:
        """The review system's view of the change (None: a connection without a driver)."""
        driver = self.drivers.get(change.connection)
        if driver is None:
            return None
        try:
            return await driver.get_change(change.number)
        except ChangeNotFound:
            raise _Unresolvable(f"change {change.key}: no such change in "
                                f"{change.connection}") from None

    async def visit(self, change: ChangeRef, path: list[ChangeRef],
                    info: ChangeInfo | None) -> None:
        key = (change.connection, change.number)
        if key in self._done:
            return
        for i, earlier in enumerate(path):
            if (earlier.connection, earlier.number) == key:
                loop = " -> ".join(c.key for c in [*path[i:], change])
                raise _Unresolvable(f"dependency cycle: {loop}")
        message = await self._message(change)
        needs: list[NeededChange] = []
        for parent, parent_info in await self._parent_changes(change):
            await self.visit(parent, [*path, change], parent_info)
            needs.append(_needed(parent, "parent"))
        for dep in depends_on(message):
            dep_info = await self._lookup(change, dep)
            if dep_info is not None:
                await self.visit(dep_info.ref(), [*path, change], dep_info)
                needs.append(_needed(dep_info.ref(), "depends-on"))
        self._done.add(key)
        self.order.append(change)
        self.infos.append(_dependency_info(change, info, needs))

    async def _message(self, change: ChangeRef) -> str:
        # The commit is the authority on its footers (a review system's copy may be edited).
        try:
            await self.cache.fetch(change.connection, change.project, [change.ref])
            return await self.cache.commit_message(change.connection, change.project,
                                                   change.commit or change.ref)
        except (RefNotFound, RevisionNotFound) as exc:
            raise _Unresolvable(f"change {change.key}: {exc}") from None

    async def _parent_changes(self, change: ChangeRef) -> list[tuple[ChangeRef, ChangeInfo]]:
        """Open changes whose commit `change` sits on (not yet on its branch), at the patchset
        that commit is."""
        conn, project = change.connection, change.project
        out = []
        for parent in await self.cache.parents(conn, project, change.commit or change.ref):
            if await self.cache.on_branch(conn, project, parent, change.branch):
                continue
            message = await self.cache.commit_message(conn, project, parent)
            change_id = _change_id(message)
            driver = self.drivers.get(conn)
            if change_id is None or driver is None:
                continue  # a plain commit, not a change: it merges along with its child
            info = _pick(await driver.find_change_id(change_id), change.branch)
            if info is None or info.status != "NEW" or info.project not in self.known_projects:
                continue
            patchset = info.patchset if parent == info.commit else info.revisions.get(parent)
            if patchset is None:
                continue  # not a patchset the review system knows: a plain commit
            # The patchset the child is built on, current or not (an outdated one cannot
            # merge: the gate says so; check tests what the child really contains).
            out.append((info.ref().model_copy(update={"patchset": patchset, "commit": parent}),
                        info))
        return out

    async def _lookup(self, change: ChangeRef, dep: DependsOn) -> ChangeInfo | None:
        """The dependency's current state, or None when it is merged already."""
        where = f"change {change.key} (Depends-On: {dep.raw})"
        if dep.number is None and dep.change_id is None:
            raise _Unresolvable(f"{where}: neither a change URL nor a Change-Id")
        driver = self._driver_for(change, dep, where)
        try:
            if dep.number is not None:
                info = await driver.get_change(dep.number)
            else:
                assert dep.change_id is not None
                info = _pick(await driver.find_change_id(dep.change_id), change.branch)
        except ChangeNotFound:
            info = None
        if info is None:
            raise _Unresolvable(f"{where}: no such change in {driver.connection}")
        if info.status == "MERGED":
            return None
        if info.status == "ABANDONED":
            raise _Unresolvable(f"{where}: depends on abandoned change {info.number}")
        # A project lockmaster does not know is tested along in check (Zuul does); a queue
        # refuses it (it shares no queue with anything).
        return info

    def _driver_for(self, change: ChangeRef, dep: DependsOn, where: str) -> ReviewDriver:
        if dep.host is None:  # a Change-Id: looked up where the change itself lives
            if change.connection not in self.drivers:
                raise _Unresolvable(f"{where}: no review connection {change.connection}")
            return self.drivers[change.connection]
        serving = [name for name, d in self.drivers.items() if _host(d) == dep.host]
        if not serving:
            raise _Unresolvable(f"{where}: no review connection serves {dep.host}")
        # Two connections on one host (e.g. different users): the change's own wins.
        name = change.connection if change.connection in serving else serving[0]
        return self.drivers[name]


def _needed(change: ChangeRef, via: str) -> NeededChange:
    return NeededChange(project=change.project, number=change.number, patchset=change.patchset,
                        via=via, url=change.url)  # type: ignore[arg-type]


def _dependency_info(change: ChangeRef, info: ChangeInfo | None,
                     needs: list[NeededChange]) -> DependencyInfo:
    if info is None:  # no driver to ask: taken as it was given
        return DependencyInfo(change=change, current_patchset=change.patchset, needs=needs)
    return DependencyInfo(change=change, current_patchset=info.patchset, status=info.status,
                          approvals=dict(info.approvals), wip=info.wip, private=info.private,
                          needs=needs)


def _host(driver: ReviewDriver) -> str:
    return urlsplit(driver.change_url(1)).netloc.lower()


def _pick(infos: list[ChangeInfo], branch: str) -> ChangeInfo | None:
    """Of the changes sharing a Change-Id: the one on `branch`, else the most open one."""
    pool = [i for i in infos if i.branch == branch] or infos
    return min(pool, key=lambda i: (_STATUS_RANK[i.status], i.number)) if pool else None


def _change_id(message: str) -> str | None:
    for line in reversed(message.strip().splitlines()):
        key, _, value = line.partition(":")
        if key.strip().lower() == "change-id" and value.strip().startswith("I"):
            return value.strip()
    return None
