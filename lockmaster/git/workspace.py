"""Check a speculative state out into a job's workspace, proving it is the state that was tested."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from lockmaster.execution.workspace import WorkspaceError
from lockmaster.git.cache import RefNotFound, RepoCache, RevisionNotFound
from lockmaster.git.merger import CommitMismatch, change_commit
from lockmaster.git.recipe import MergeConflict, apply_merges
from lockmaster.git.runner import git, run_git
from lockmaster.model.state import ProjectState, SpeculativeState

_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


class GitWorkspacePreparer:
    """WorkspacePreparer with real clones: `dest/src/<project>` at the state's head for it.

    A head this machine's merger made is taken from the cache; otherwise the merges are
    replayed with the merger's recipe and the result must be the recorded head, bit for bit.
    """

    def __init__(self, cache: RepoCache, project_connections: Mapping[str, str], *,
                 default_branch: str = "master") -> None:
        self.cache = cache
        self.project_connections = dict(project_connections)
        self.default_branch = default_branch

    async def prepare(self, state: SpeculativeState, dest: Path, projects: list[str]) -> None:
        src = Path(dest) / "src"
        for project_state in state.projects.values():
            await self._checkout_state(project_state, state.merge_date, src)
        # Extra projects follow the branch of the change under test when they have it.
        wanted = [state.changes[-1].branch] if state.changes else []
        branches = tuple(dict.fromkeys([*wanted, self.default_branch]))
        for project in dict.fromkeys(projects):
            if project not in state.projects:
                await self._checkout_tip(project, branches, src)

    async def _checkout_state(self, ps: ProjectState, merge_date: int, src: Path) -> None:
        conn, project = ps.connection, ps.project
        if not (_SHA.fullmatch(ps.head) and _SHA.fullmatch(ps.base)):
            raise WorkspaceError(f"{project}: base/head are not commit ids: {ps.base} {ps.head}")
        if not await self.cache.has_commit(conn, project, ps.head):
            try:
                await self.cache.fetch(conn, project, [c.ref for c in ps.merged])
            except RefNotFound as exc:
                raise WorkspaceError(f"cannot reproduce {project}: {exc}") from None
        target = await self._clone(conn, project, src)
        if not await _has_commit(target, ps.head):
            await self._reproduce(ps, merge_date, target)
        await git("checkout", "--quiet", "--force", "-B", ps.branch, ps.head, cwd=target)

    async def _reproduce(self, ps: ProjectState, merge_date: int, target: Path) -> None:
        conn, project = ps.connection, ps.project
        refs = [c.ref for c in ps.merged]
        if refs:  # jobs get the change refs too, as in the review system
            await git("fetch", "--quiet", "--no-write-fetch-head",
                      str(self.cache.path(conn, project)), *[f"+{r}:{r}" for r in refs],
                      cwd=target)
        if not await _has_commit(target, ps.base):
            raise WorkspaceError(f"cannot reproduce {project}: base {ps.base} is gone")
        try:
            merges = [(c, await change_commit(self.cache, c)) for c in ps.merged]
            head = await apply_merges(target, ps.base, merges, merge_date)
        except (CommitMismatch, MergeConflict) as exc:
            raise WorkspaceError(f"cannot reproduce {project}: {exc}") from None
        if head != ps.head:
            raise WorkspaceError(
                f"cannot reproduce {project}: merging {', '.join(c.key for c in ps.merged)} "
                f"onto {ps.base} gave {head}, the state says {ps.head}"
            )
        await self.cache.store_state(conn, project, target, head)

    async def _checkout_tip(self, project: str, branches: tuple[str, ...], src: Path) -> None:
        conn = self.project_connections.get(project)
        if conn is None:
            raise WorkspaceError(f"project {project} has no known connection")
        await self.cache.fetch(conn, project)
        try:
            branch, tip = await self.cache.branch_tip(conn, project, *branches)
        except RevisionNotFound as exc:
            raise WorkspaceError(str(exc)) from None
        target = await self._clone(conn, project, src)
        await git("checkout", "--quiet", "--force", "-B", branch, tip, cwd=target)

    async def _clone(self, conn: str, project: str, src: Path) -> Path:
        """A full clone of the cached repository, `origin` pointing at the review system."""
        cached = self.cache.path(conn, project)  # also rejects project names like "../x"
        target = src.joinpath(*project.split("/"))
        if target.exists():  # a retried preparation starts over
            await asyncio.to_thread(shutil.rmtree, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Under the lock: a fetch's repack must not remove packs while they are being copied.
        async with self.cache.locked(conn, project):
            await git("clone", "--quiet", "--no-checkout", str(cached), str(target),
                      cwd=target.parent)
        await git("remote", "set-url", "origin", self.cache.url(conn, project), cwd=target)
        return target


async def _has_commit(repo: Path, rev: str) -> bool:
    return (await run_git("cat-file", "-e", f"{rev}^{{commit}}", cwd=repo)).returncode == 0
