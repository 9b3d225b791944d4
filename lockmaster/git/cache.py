"""A machine-local cache of review-system repositories: one bare repository per project."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from lockmaster.git.locks import file_lock
from lockmaster.git.recipe import MEMO_PREFIX
from lockmaster.git.runner import GitError, git, git_stdin, run_git

# Where speculative heads are kept, so a preparer on this machine finds them without merging.
STATE_REF_PREFIX = "refs/lockmaster/states/"

UrlFor = Callable[[str, str], str]

_MISSING_REF = re.compile(r"couldn't find remote ref (\S+)")


class RefNotFound(GitError):
    """The review system has no such ref (a change or patchset that does not exist)."""

    def __init__(self, message: str, ref: str) -> None:
        super().__init__(message)
        self.ref = ref


class RevisionNotFound(GitError):
    """The cache has no such commit or ref."""


def _safe_parts(name: str, what: str) -> list[str]:
    # Project names become directories: refuse anything that could leave the cache root.
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise ValueError(f"unusable {what} name for the repository cache: {name!r}")
    return parts


def _check_rev(rev: str) -> str:
    if not rev or rev.startswith("-"):
        raise ValueError(f"not a revision: {rev!r}")
    return rev


class RepoCache:
    """Bare repositories under `root/<connection>/<project>.git`, fetched from `url_for`.

    Branches and tags are mirrored under their own names, fetched change refs
    (refs/changes/NN/N/P) too. Ref writers (fetch, store_state, keep_state) hold a
    per-repository asyncio.Lock and an flock (keep_state only the one for lockmaster's own
    refs), because several worker processes may share `root`; readers need no lock since git
    updates refs atomically. Writing objects (the merger's merges) needs no lock either: git
    writes each atomically, and an automatic gc only prunes unreferenced objects weeks old.
    """

    def __init__(self, root: Path, url_for: UrlFor) -> None:
        self.root = Path(root)
        self._url_for = url_for
        self._locks: dict[tuple[str, str, bool], asyncio.Lock] = {}
        self._fetch_started: dict[tuple[str, str], float] = {}
        self._wanted: dict[tuple[str, str], set[str]] = {}

    def url(self, connection: str, project: str) -> str:
        """Where the review system serves the project (what `origin` points at in workspaces)."""
        return self._url_for(connection, project)

    def path(self, connection: str, project: str) -> Path:
        parts = _safe_parts(project, "project")
        return self.root.joinpath(*_safe_parts(connection, "connection"), *parts[:-1],
                                  parts[-1] + ".git")

    @asynccontextmanager
    async def locked(self, connection: str, project: str, *, refs: bool = False
                     ) -> AsyncIterator[None]:
        """Exclusive write access to one cached repository, across tasks and processes.

        With `refs`: to lockmaster's own refs (refs/lockmaster/...) only, which nothing
        fetched touches, so that remembering a state need not wait for a fetch.
        """
        lock = self._locks.setdefault((connection, project, refs), asyncio.Lock())
        lock_file = self.root.joinpath(".locks", connection, *_safe_parts(project, "project"))
        suffix = ".lock.refs" if refs else ".lock"
        async with lock, file_lock(lock_file.with_name(lock_file.name + suffix)):
            yield

    async def ensure(self, connection: str, project: str) -> Path:
        """Create the cached repository if needed (empty; `fetch` fills it)."""
        async with self.locked(connection, project):
            return await self._ensure_locked(connection, project)

    async def _ensure_locked(self, connection: str, project: str) -> Path:
        path = self.path(connection, project)
        if (path / "HEAD").exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Initialise aside and rename: a crash never leaves a half-made repository in place.
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.init-", dir=path.parent))
        try:
            await git("init", "--bare", "--quiet", str(tmp), cwd=path.parent)
            os.rename(tmp, path)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)  # gone after a successful rename
        return path

    async def fetch(self, connection: str, project: str, refs: Sequence[str] = (),
                    asked: float | None = None) -> None:
        """Fetch every branch and tag, plus `refs` (e.g. change refs) under their own names.
        `asked` (time.monotonic()): the review system must be seen as it was then at least
        (default: now); a fetch begun since that brought `refs` is enough.

        Raises RefNotFound when the review system lacks one of `refs`.
        """
        for ref in dict.fromkeys(refs):
            if not ref.startswith("refs/") or any(c in ref for c in ":*^~ "):
                raise ValueError(f"not a ref name: {ref!r}")
        key = (connection, project)
        # Callers waiting for the lock leave what they need here; whoever fetches next fetches
        # it all. Concurrent merges of one queue thus share fetches instead of queueing one each.
        self._wanted.setdefault(key, set()).update(refs)
        asked = time.monotonic() if asked is None else asked
        async with self.locked(connection, project):
            path = await self._ensure_locked(connection, project)
            # A fetch that began after we were asked saw the review system at least as it was
            # then: when it brought every ref we need, fetching again adds nothing.
            if self._fetch_started.get(key, -1.0) > asked and await self._has_refs(path, refs):
                return
            self._fetch_started[key] = time.monotonic()
            batch = self._wanted.pop(key, set()) | set(refs)
            try:
                await self._fetch_locked(connection, project, path, batch)
            except RefNotFound as exc:
                if exc.ref in refs or batch == set(refs):
                    raise
                # Another caller's ref is missing: that is theirs to hear; fetch ours alone.
                await self._fetch_locked(connection, project, path, set(refs))

    async def _fetch_locked(self, connection: str, project: str, path: Path,
                            refs: set[str]) -> None:
        specs = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
        specs += [f"+{ref}:{ref}" for ref in sorted(refs)
                  if not ref.startswith(("refs/heads/", "refs/tags/"))]
        try:
            await git("fetch", "--quiet", "--prune", "--no-write-fetch-head",
                      "--no-show-forced-updates", self.url(connection, project), *specs,
                      cwd=path)
        except GitError as exc:
            if missing := _MISSING_REF.search(exc.stderr):
                raise RefNotFound(
                    f"{project} ({connection}) has no {missing.group(1)}", missing.group(1)
                ) from exc
            raise

    @staticmethod
    async def _has_refs(path: Path, refs: Sequence[str]) -> bool:
        """Whether every one of `refs` exists (one git call)."""
        if not refs:
            return True
        result = await run_git("show-ref", "--verify", "--quiet", *dict.fromkeys(refs), cwd=path)
        return result.returncode == 0

    async def rev_parse(self, connection: str, project: str, rev: str) -> str:
        """The commit `rev` names in the cache (raises RevisionNotFound)."""
        path = self.path(connection, project)
        result = await run_git("rev-parse", "--verify", "--quiet", f"{_check_rev(rev)}^{{commit}}",
                               cwd=path)
        if result.returncode != 0:
            raise RevisionNotFound(f"{project} ({connection}): no commit {rev} in the cache")
        return result.stdout.strip()

    async def rev_parse_many(self, connection: str, project: str, revs: Sequence[str]
                             ) -> list[str]:
        """The commits `revs` name, in one git call (raises RevisionNotFound)."""
        if not revs:
            return []
        path = self.path(connection, project)
        # (--verify takes one name only; without it, a missing one fails the whole call.)
        result = await run_git("rev-parse", *(f"{_check_rev(r)}^{{commit}}" for r in revs),
                               cwd=path)
        shas = result.stdout.split()
        if result.returncode != 0 or len(shas) != len(revs):
            # Say which one: ask one by one (rare: a ref the fetch did not bring).
            for rev in revs:
                await self.rev_parse(connection, project, rev)
        return shas

    async def branch_tip(self, connection: str, project: str, *branches: str) -> tuple[str, str]:
        """(branch, commit) for the first of `branches` the cache has (raises RevisionNotFound)."""
        for branch in branches:
            try:
                return branch, await self.rev_parse(connection, project, f"refs/heads/{branch}")
            except RevisionNotFound:
                continue
        raise RevisionNotFound(
            f"{project} ({connection}) has no branch {' or '.join(dict.fromkeys(branches))}"
        )

    async def parents(self, connection: str, project: str, rev: str) -> list[str]:
        """The parent commits of `rev`."""
        out = await git("rev-list", "--parents", "-n1", _check_rev(rev),
                        cwd=self.path(connection, project))
        return out.split()[1:]

    async def on_branch(self, connection: str, project: str, rev: str, branch: str) -> bool:
        """Whether `rev` is already part of the branch (an ancestor of its tip)."""
        result = await run_git("merge-base", "--is-ancestor", _check_rev(rev),
                               f"refs/heads/{branch}", cwd=self.path(connection, project))
        return result.returncode == 0

    async def has_commit(self, connection: str, project: str, rev: str) -> bool:
        path = self.path(connection, project)
        if not (path / "HEAD").exists():
            return False
        result = await run_git("cat-file", "-e", f"{_check_rev(rev)}^{{commit}}", cwd=path)
        return result.returncode == 0

    async def commit_message(self, connection: str, project: str, rev: str) -> str:
        """The commit's message exactly as stored (headers stripped)."""
        sha = await self.rev_parse(connection, project, rev)
        raw = await git("cat-file", "commit", sha, cwd=self.path(connection, project))
        _headers, _sep, message = raw.partition("\n\n")
        return message

    async def store_state(self, connection: str, project: str, source: Path, sha: str,
                          memo: Sequence[tuple[str, str]] = ()) -> str:
        """Push commit `sha` from repository `source` to refs/lockmaster/states/<sha>, and
        remember the merges that made it (`memo`: (key, commit), see recipe.memo_key) now that
        their commits, ancestors of `sha`, are stored here."""
        ref = STATE_REF_PREFIX + sha
        async with self.locked(connection, project), self.locked(connection, project, refs=True):
            path = await self._ensure_locked(connection, project)
            await git("push", "--quiet", "--no-verify", str(path), f"+{_check_rev(sha)}:{ref}",
                      cwd=source)
            if memo:
                await self._update_refs(path, [(MEMO_PREFIX + key, commit)
                                               for key, commit in memo])
        return ref

    async def keep_state(self, connection: str, project: str, sha: str,
                         memo: Sequence[tuple[str, str]] = ()) -> str:
        """Like `store_state` for a commit made in the cached repository itself: refer to it as
        refs/lockmaster/states/<sha> (so no gc drops it) and remember the merges that made it,
        in one git call."""
        ref = STATE_REF_PREFIX + sha
        async with self.locked(connection, project, refs=True):
            await self._update_refs(self.path(connection, project), [
                (ref, sha), *((MEMO_PREFIX + key, commit) for key, commit in memo)])
        return ref

    @staticmethod
    async def _update_refs(path: Path, updates: Sequence[tuple[str, str]]) -> None:
        await git_stdin("update-ref", "--stdin", cwd=path, stdin="".join(
            f"update {ref} {_check_rev(sha)}\n" for ref, sha in updates))

    @asynccontextmanager
    async def scratch(self, connection: str, project: str) -> AsyncIterator[Path]:
        """A throw-away non-bare repository that borrows the cached repository's objects.

        Merges happen there, so nothing other callers see in the cache (refs, HEAD) changes
        (recipe.apply_merges has them write their commits into the cache's objects).
        """
        objects = self.path(connection, project) / "objects"
        base = self.root / ".scratch"
        base.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="merge-", dir=base))
        try:
            await git("init", "--quiet", str(work), cwd=base)
            (work / ".git" / "objects" / "info" / "alternates").write_text(f"{objects}\n")
            yield work
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
