"""Build a speculative state: per project, the branch tip with the changes merged on top."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from lockmaster.git.cache import RefNotFound, RepoCache, RevisionNotFound
from lockmaster.git.recipe import MergeConflict, apply_merges, forget_merges
from lockmaster.git.runner import GitError
from lockmaster.model.change import ChangeRef
from lockmaster.model.state import (
    PrepareStateRequest,
    PrepareStateResult,
    PrepareStatesRequest,
    PrepareStatesResult,
    ProjectState,
    SpeculativeState,
)


class CommitMismatch(Exception):
    """A change's patchset ref is not at the commit the caller was told about."""

    def __init__(self, change: ChangeRef, actual: str) -> None:
        super().__init__(
            f"change {change.key}: {change.ref} of {change.project} is at {actual}, "
            f"not {change.commit}"
        )
        self.change = change


class _Failure(Exception):
    """Ends preparation with ok=False (not a git malfunction, which is raised to be retried)."""

    def __init__(self, error: str, change: ChangeRef | None = None) -> None:
        super().__init__(error)
        self.change = change


@dataclass
class _Plan:
    project: str
    connection: str
    branches: tuple[str, ...]  # the first that exists is used (required projects fall back)
    changes: list[ChangeRef] = field(default_factory=list)

    def key(self, merge_date: int) -> _PlanKey:
        return (self.connection, self.project, self.branches, merge_date,
                tuple((c.key, c.commit) for c in self.changes))


_PlanKey = tuple[str, str, tuple[str, ...], int, tuple[tuple[str, str | None], ...]]


@dataclass
class _Row:
    """What the states of one row share: the review system seen once (each project fetched,
    its branch tips and change refs resolved, in one git call each), and the projects made."""

    resolved: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    prepared: dict[_PlanKey, ProjectState] = field(default_factory=dict)


async def prepare_states(
    req: PrepareStatesRequest,
    cache: RepoCache,
    project_connections: Mapping[str, str] | None = None,
) -> PrepareStatesResult:
    """Each state in turn: the merges of the one before are remembered, so each usually costs
    one new merge; the review system is seen as it was when the row was asked for (one fetch
    per project serves them all)."""
    asked = time.monotonic()
    wanted: dict[tuple[str, str], dict[str, None]] = {}
    for one in req.requests:
        for change in one.changes:
            revs = wanted.setdefault((change.connection, change.project), {})
            revs[f"refs/heads/{change.branch}"] = None
            revs[change.ref] = None
    row = _Row()
    for (connection, project), revs in wanted.items():
        refs = [r for r in revs if not r.startswith("refs/heads/")]
        # One fetch for the row; a ref that is gone fails only the states that need it (each
        # state then fetches and resolves on its own, and says which change it was).
        try:
            await cache.fetch(connection, project, refs, asked=asked)
            shas = await cache.rev_parse_many(connection, project, list(revs))
        except (RefNotFound, RevisionNotFound):
            continue
        row.resolved[(connection, project)] = dict(zip(revs, shas, strict=True))
    # Consecutive states of a row differ in one project (the one of the change each adds):
    # every other project is the one the state before prepared (at 20 projects, 19 of every
    # 20 projects' three git calls each; docs/benchmarks.md, "Soak").
    return PrepareStatesResult(results=[
        await prepare_state(one, cache, project_connections, fetched_since=asked, row=row)
        for one in req.requests])


async def prepare_state(
    req: PrepareStateRequest,
    cache: RepoCache,
    project_connections: Mapping[str, str] | None = None,
    *,
    default_branch: str = "master",
    fetched_since: float | None = None,
    row: _Row | None = None,
) -> PrepareStateResult:
    """Merge `req.changes` in order onto their branch tips; add `req.required_projects` as is.

    `project_connections` names the connection of each required project not touched by a
    change. Conflicts and unusable requests give ok=False; git or network failures raise.
    `row`: what the states of one row share (prepare_states): the review system as the row
    saw it, and the projects made for the states before, by what was merged onto which
    branch (one asked for again is taken from there).
    """
    try:
        plans = _plan(req, project_connections or {}, default_branch)
        made: list[ProjectState] = []
        conflicts: list[MergeConflict] = []
        for plan in plans:
            key = plan.key(req.merge_date)
            if row is not None and key in row.prepared:
                made.append(row.prepared[key])
                continue
            try:
                made.append(await _prepare_project(
                    plan, req.merge_date, cache, fetched_since,
                    row.resolved.get((plan.connection, plan.project)) if row else None))
            except MergeConflict as exc:
                conflicts.append(exc)
                continue
            if row is not None:
                row.prepared[key] = made[-1]
    except _Failure as exc:
        # Not a conflict: about the change under test (last) or the request itself, it is final.
        last = req.changes[-1] if req.changes else None
        own = exc.change is None or (last is not None and (exc.change.project, exc.change.key)
                                     == (last.project, last.key))
        return PrepareStateResult(ok=False, conflict_change=exc.change, error=str(exc),
                                  permanent=own)
    if conflicts:
        # Projects are merged one after the other; report the change earliest in merge order.
        first = min(conflicts, key=lambda c: req.changes.index(c.change))
        return PrepareStateResult(ok=False, conflict_change=first.change, error=first.summary)
    projects, other_branches = _checked_out(made, req.changes)
    state = SpeculativeState(changes=list(req.changes), projects=projects,
                             other_branches=other_branches, merge_date=req.merge_date)
    return PrepareStateResult(ok=True, state=state)


def _checked_out(prepared: list[ProjectState], changes: list[ChangeRef]
                 ) -> tuple[dict[str, ProjectState], list[ProjectState]]:
    """Which branch of each project jobs check out: the one of the change under test, else
    the one its last change in merge order targets. A queue spanning branches tests a change
    with the changes ahead on other branches merged too (Zuul keeps a state per project and
    branch): those states are kept beside, proven mergeable, not checked out."""
    under_test = changes[-1].branch if changes else None
    last: dict[str, str] = {}
    for change in changes:
        last[change.project] = change.branch
    projects: dict[str, ProjectState] = {}
    for ps in prepared:
        chosen = projects.get(ps.project)
        want = under_test if any(p.project == ps.project and p.branch == under_test
                                 for p in prepared) else last.get(ps.project, ps.branch)
        if chosen is None or (chosen.branch != want and ps.branch == want):
            projects[ps.project] = ps
    others = [ps for ps in prepared if projects[ps.project] is not ps]
    return projects, others


def _plan(req: PrepareStateRequest, project_connections: Mapping[str, str],
          default_branch: str) -> list[_Plan]:
    # One plan per project and branch: changes of one project on two branches (a queue
    # spanning branches) are merged onto each their own branch.
    plans: dict[str, _Plan] = {}
    for change in req.changes:
        plan = plans.setdefault(
            f"{change.project}\0{change.branch}",
            _Plan(change.project, change.connection, (change.branch,)),
        )
        if change.connection != plan.connection:
            raise _Failure(
                f"changes of {change.project} come from different connections "
                f"({plan.connection} and {change.connection} for change {change.key})", change,
            )
        plan.changes.append(change)
    # Required projects follow the branch of the change under test when they have it (Zuul).
    branches = tuple(dict.fromkeys([req.changes[-1].branch, default_branch])) \
        if req.changes else (default_branch,)
    planned = {plan.project for plan in plans.values()}
    for project in req.required_projects:
        if project in planned:
            continue
        if project not in project_connections:
            raise _Failure(f"required project {project} has no known connection")
        plans[project] = _Plan(project, project_connections[project], branches)
    return list(plans.values())


async def _prepare_project(plan: _Plan, merge_date: int, cache: RepoCache,
                           fetched_since: float | None = None,
                           resolved: Mapping[str, str] | None = None) -> ProjectState:
    conn, project = plan.connection, plan.project
    seen = _seen(plan, resolved)
    if seen is not None:
        branch, base, commits = seen  # fetched and resolved for the whole row
    else:
        try:
            await cache.fetch(conn, project, [c.ref for c in plan.changes],
                              asked=fetched_since)
        except RefNotFound as exc:
            change = next((c for c in plan.changes if c.ref == exc.ref), None)
            raise _Failure(str(exc), change) from None
        branch, base, commits = await _resolve(plan, cache)
    for change, commit in zip(plan.changes, commits, strict=True):
        if change.commit and change.commit != commit:
            exc = CommitMismatch(change, commit)
            raise _Failure(str(exc), change)
    merges = list(zip(plan.changes, commits, strict=True))
    head = base
    if merges:
        repo = cache.path(conn, project)
        for again in (True, False):
            learned: list[tuple[str, str]] = []
            head = await apply_merges(repo, base, merges, merge_date, memo=True,
                                      learned=learned,
                                      scratch=lambda: cache.scratch(conn, project))
            try:
                await cache.keep_state(conn, project, head, memo=learned)
                break
            except GitError:
                # A head known from memory whose commits are gone (the cache was removed
                # while this process ran): forget, and merge again.
                forget_merges(repo)
                if not again:
                    raise
    return ProjectState(project=project, connection=conn, branch=branch, base=base, head=head,
                        merged=list(plan.changes))


def _seen(plan: _Plan, resolved: Mapping[str, str] | None
          ) -> tuple[str, str, list[str]] | None:
    """(branch, its tip, each change's commit) from what the row resolved, if it has all."""
    if resolved is None or not plan.changes:
        return None
    revs = [f"refs/heads/{plan.branches[0]}", *(c.ref for c in plan.changes)]
    if not all(r in resolved for r in revs):
        return None
    tip, *commits = (resolved[r] for r in revs)
    return plan.branches[0], tip, commits


async def _resolve(plan: _Plan, cache: RepoCache) -> tuple[str, str, list[str]]:
    """(branch, its tip, the commit of each change): one git call when all exist."""
    conn, project = plan.connection, plan.project
    refs = [c.ref for c in plan.changes]
    try:
        tip, *commits = await cache.rev_parse_many(
            conn, project, [f"refs/heads/{plan.branches[0]}", *refs])
        return plan.branches[0], tip, commits
    except RevisionNotFound:
        pass  # find out which is missing, or try the next branch
    try:
        branch, base = await cache.branch_tip(conn, project, *plan.branches)
    except RevisionNotFound as exc:
        raise _Failure(str(exc), plan.changes[0] if plan.changes else None) from None
    try:
        commits = await cache.rev_parse_many(conn, project, refs)
    except RevisionNotFound as exc:
        raise _Failure(str(exc), plan.changes[0]) from None
    return branch, base, commits


async def change_commit(cache: RepoCache, change: ChangeRef) -> str:
    """The commit of the change's patchset ref (fetched), checked against `change.commit`."""
    commit = await cache.rev_parse(change.connection, change.project, change.ref)
    if change.commit and change.commit != commit:
        raise CommitMismatch(change, commit)
    return commit
