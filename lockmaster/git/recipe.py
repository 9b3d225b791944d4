"""The merge recipe: how a speculative head is built from a base and changes, bit for bit.

The merger and the workspace preparer both call `apply_merges`; anyone replaying it with the
same base, change commits and merge date (and the same git) gets the same head sha. That is
what lets a workspace prove it checked out exactly the state the gate tested.

Each merge is what `git merge --no-ff --strategy=ort -m <merge_message>` in a worktree checked
out at the previous head commits, with the fixed identity and date. It is made in one of three
ways, all giving those same commits bit for bit:
- `git merge-tree --write-tree`, and the commit object written as `git commit-tree` would
  (all of a state's commits through one `git hash-object`): no worktree, no checkout, objects
  written straight into the repository. The usual way.
- Not at all, when the merge is already known: remembered (memo refs, or made a moment ago in
  this process), or, after the gate merged the changes ahead, remembered on the older base with
  the very tree the new tip has (see `_transplant`, which says when that is exact).
- `git merge` in a worktree, when a tree involved carries a `.gitattributes` file: a merge in
  a worktree obeys the attributes (merge=union, binary, ...) of the checked-out files, which
  merge-tree in a bare repository (git 2.39) does not see.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from lockmaster.git.runner import (
    IDENTITY_EMAIL,
    IDENTITY_NAME,
    GitCoprocess,
    GitError,
    git,
    run_git,
)
from lockmaster.model.change import ChangeRef


class MergeConflict(Exception):
    """`change` does not merge onto what came before it; `summary` is git's conflict report."""

    def __init__(self, change: ChangeRef, summary: str) -> None:
        super().__init__(f"change {change.key} of {change.project} does not merge: {summary}")
        self.change = change
        self.summary = summary


def merge_message(change: ChangeRef) -> str:
    # Only fields that identify the patchset go in: url/commit/change_id may be filled in by
    # one caller and not another, and any difference would change the sha.
    return (
        f"Merge change {change.key} into {change.branch}\n\n"
        f"Speculative merge by lockmaster of {change.project} {change.ref}.\n"
    )


def merge_env(merge_date: int) -> dict[str, str]:
    """Fixed dates (identity comes from runner.git_env) so the merge commits are reproducible."""
    date = f"{merge_date} +0000"
    return {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}


MEMO_PREFIX = "refs/lockmaster/merges/"


def memo_key(parent: str, change: ChangeRef, commit: str, merge_date: int) -> str:
    """Everything a merge commit depends on (with git's fixed identity): equal keys, equal
    commits. Lets a queue's items reuse the merges of the items ahead of them."""
    text = f"{parent}\0{commit}\0{merge_message(change)}\0{merge_date}"
    return hashlib.sha1(text.encode()).hexdigest()


def merge_commit_text(tree: str, parents: Sequence[str], change: ChangeRef,
                      merge_date: int) -> str:
    """The merge commit object, exactly as `git commit-tree` (or `git merge`) writes it."""
    ident = f"{IDENTITY_NAME} <{IDENTITY_EMAIL}> {merge_date} +0000"
    return (f"tree {tree}\n" + "".join(f"parent {p}\n" for p in parents)
            + f"author {ident}\ncommitter {ident}\n\n" + merge_message(change))


Scratch = Callable[[], AbstractAsyncContextManager[Path]]


class _Merges:
    """The merges known in one repository: made by this process (or being made right now: a
    future of the result, None if that merge failed), and those its memo refs remember, read
    once. Memo key -> (commit, tree); and by tree, the commits having it."""

    MAX = 50_000  # then everything is forgotten (and the memo refs read again when needed)

    def __init__(self) -> None:
        self.made: dict[str, tuple[str, str] | asyncio.Future[tuple[str, str] | None]] = {}
        self.trees: dict[str, str] = {}  # commit -> tree
        self.by_tree: dict[str, set[str]] = {}
        self.refs_read = False

    def get(self, key: str) -> tuple[str, str] | None:
        made = self.made.get(key)
        return made if isinstance(made, tuple) else None

    def add(self, key: str, commit: str, tree: str) -> None:
        if len(self.made) >= self.MAX:
            self.made, self.trees, self.by_tree, self.refs_read = {}, {}, {}, False
        self.made[key] = (commit, tree)
        self.trees[commit] = tree
        self.by_tree.setdefault(tree, set()).add(commit)


_MERGES: dict[str, _Merges] = {}  # per repository path (the merger's cached repositories)
_MERGES_REPOS = 1_000


def _merges(repo: Path) -> _Merges:
    if str(repo) not in _MERGES and len(_MERGES) >= _MERGES_REPOS:
        del _MERGES[next(iter(_MERGES))]
    return _MERGES.setdefault(str(repo), _Merges())


def forget_merges(repo: Path) -> None:
    """Forget what this process knows of `repo`'s merges: after a git error, in case the
    repository was removed or made anew (its objects gone) while this process ran."""
    _MERGES.pop(str(repo), None)


async def apply_merges(repo: Path, base: str, merges: Sequence[tuple[ChangeRef, str]],
                       merge_date: int, *, memo: bool = False,
                       learned: list[tuple[str, str]] | None = None,
                       scratch: Scratch | None = None) -> str:
    """Merge each (change, commit) in order onto `base`, in repository `repo`; returns the head.

    Every merge is `--no-ff`, so a change that could fast-forward still gets its own merge
    commit (one rule, no special case); a commit already contained in the head merges to
    nothing. Raises MergeConflict on conflict. The commits are written into `repo`'s objects
    and no ref, index or file of `repo` changes, except in the worktree case below when `repo`
    is itself a worktree (its HEAD and files then move).

    `memo`: reuse the merges known in `repo`: those its `refs/lockmaster/merges/<key>`
    remember, and those this process made there (or is making right now: they are waited for,
    not made twice). A leading run of known merges is not redone, and when the base moved (the
    gate merged the changes ahead), merges known on an older base with the same tree give
    their trees to the merges on the new base (see `_transplant`). New merges are appended to
    `learned` as (key, commit) for the caller to store as memo refs (see `memo_key`).

    `scratch`: gives a throw-away worktree for the attributes case when `repo` is bare.
    """
    try:
        return await _apply_merges(repo, base, merges, merge_date, memo, learned, scratch)
    except GitError:
        forget_merges(repo)
        raise


async def _apply_merges(repo: Path, base: str, merges: Sequence[tuple[ChangeRef, str]],
                        merge_date: int, memo: bool, learned: list[tuple[str, str]] | None,
                        scratch: Scratch | None) -> str:
    head = base
    remaining = list(merges)
    if not remaining:
        return head
    known = _merges(repo) if memo else _Merges()
    if memo and not known.refs_read:
        await _read_memo_refs(repo, known)
    head_tree: str | None = None  # known once something says
    # Merges remembered, or made (or being made right now) by another preparation in this
    # process.
    while remaining:
        change, commit = remaining[0]
        key = memo_key(head, change, commit, merge_date)
        if (made := await _made_elsewhere(known, key)) is None:
            break
        head, head_tree = made
        if learned is not None:
            learned.append((key, head))
        remaining.pop(0)
    if not remaining:
        return head
    async with _CommitWriter(repo) as writer:
        if known.made:
            head_tree = head_tree or await _tree(repo, head)
            head, head_tree, remaining = await _transplant(
                repo, head, head_tree, remaining, merge_date, known, writer, learned)
            if not remaining:
                return head
        # Attributes come from the worktree (the head being merged onto); every path of every
        # head comes from the base or a change (merges create no new file names), so these
        # commits tell whether any head can carry a .gitattributes file.
        if not await _carry_attributes(repo, [base, *(commit for _, commit in merges)]):
            return await _merge_trees(repo, head, head_tree, remaining, merge_date, known,
                                      writer, learned)
    if (repo / ".git").exists():
        return await _merge_in_worktree(repo, head, remaining, merge_date, learned)
    if scratch is None:
        raise ValueError(f"{repo} has no worktree to merge with attributes in, and no scratch")
    async with scratch() as work:
        return await _merge_in_worktree(work, head, remaining, merge_date, learned,
                                        objects=repo / "objects")


async def _made_elsewhere(known: _Merges, key: str) -> tuple[str, str] | None:
    made = known.made.get(key)
    if made is None or isinstance(made, tuple):
        return made
    return await asyncio.shield(made)


class _CommitWriter:
    """Writes merge commits through one `git hash-object --stdin-paths`, started when the
    first commit is written (the objects `git commit-tree` would write, for one process in all
    instead of one per commit)."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._git: GitCoprocess | None = None
        self._tmp: Path | None = None
        self._count = 0

    async def __aenter__(self) -> _CommitWriter:
        return self

    async def write(self, text: str) -> str:
        if self._git is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="lockmaster-commits-"))
            self._git = await GitCoprocess(
                "hash-object", "-t", "commit", "-w", "--no-filters", "--stdin-paths",
                cwd=self.repo).__aenter__()
        assert self._tmp is not None
        self._count += 1
        path = self._tmp / str(self._count)
        path.write_text(text)
        return await self._git.ask(str(path))

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if self._git is not None:
                await self._git.__aexit__(exc_type, exc, tb)
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)


async def _transplant(repo: Path, head: str, head_tree: str,
                      merges: list[tuple[ChangeRef, str]], merge_date: int, known: _Merges,
                      writer: _CommitWriter, learned: list[tuple[str, str]] | None
                      ) -> tuple[str, str, list[tuple[ChangeRef, str]]]:
    """Make the leading merges from trees remembered on another base, when that is exact.

    The gate merged the changes ahead, so the branch tip `head` is new, but the merges of the
    changes behind them were made on an older base: onto the merge of those same changes,
    whose tree (checked, never assumed) is the tip's. A merge's tree depends only on the tree
    of the side merged onto, the commit merged and their merge bases; when the tip and the
    remembered commit have the same tree, and no change to merge reaches a commit that only
    one of them has (so their merge bases with it are the same), each merge onto the tip gives
    the remembered tree. The commits are then written directly: the same commits, bit for bit,
    that merging them would make. Returns the new head, its tree and the merges left to do.
    """
    best: tuple[str, list[str]] = ("", [])
    for other in sorted(known.by_tree.get(head_tree, set()) - {head}):
        chain, at = [], other
        for change, commit in merges:
            found = known.get(memo_key(at, change, commit, merge_date))
            if found is None:
                break
            chain.append(found[0])
            at = found[0]
        if len(chain) > len(best[1]):
            best = (other, chain)
    other, chain = best
    if len(chain) < _TRANSPLANT_MIN:
        return head, head_tree, merges
    commits = [commit for _, commit in merges[:len(chain)]]
    # The commits only one side has (their symmetric difference): none of them may be reached
    # from a change, nor be a change. Nor may a change reach either side itself or anything
    # built on it, such as the remembered merges (stricter than needed; it never happens).
    out = await git("rev-list", f"{head}...{other}", cwd=repo)
    only_one_side = set(out.split())
    out = await git("rev-list", "--boundary", *commits, "--not", head, other, cwd=repo)
    reached = {line.lstrip("-") for line in out.split()}
    if only_one_side & (reached | set(commits)) or reached & {head, other, *chain}:
        return head, head_tree, merges
    at = other
    for (change, commit), remembered in zip(merges, chain, strict=False):
        parent = head
        if remembered != at:  # `at` == remembered: the commit was contained, nothing to commit
            text = merge_commit_text(known.trees[remembered], [head, commit], change,
                                     merge_date)
            head = await writer.write(text)
        at = remembered
        key = memo_key(parent, change, commit, merge_date)
        known.add(key, head, known.trees[at])
        if learned is not None:
            learned.append((key, head))
    return head, known.trees[at], merges[len(chain):]


# Transplanting costs two git calls; a merge made the usual way costs one.
_TRANSPLANT_MIN = 3


async def _merge_trees(repo: Path, head: str, head_tree: str | None,
                       merges: Sequence[tuple[ChangeRef, str]], merge_date: int,
                       known: _Merges, writer: _CommitWriter,
                       learned: list[tuple[str, str]] | None) -> str:
    """The merges with `git merge-tree`, the commits written as `git commit-tree` would."""
    for change, commit in merges:
        key = memo_key(head, change, commit, merge_date)
        made = await _made_elsewhere(known, key)
        if made is None:
            made = await _merge_once(repo, key, head, head_tree, change, commit, merge_date,
                                     known, writer)
        head, head_tree = made
        if learned is not None:
            learned.append((key, head))
    return head


async def _merge_once(repo: Path, key: str, head: str, head_tree: str | None,
                      change: ChangeRef, commit: str, merge_date: int, known: _Merges,
                      writer: _CommitWriter) -> tuple[str, str]:
    """One merge, announced in `known` while it is made. Returns (commit, tree)."""
    made: asyncio.Future[tuple[str, str] | None] = asyncio.get_running_loop().create_future()
    known.made[key] = made
    try:
        result = await run_git("merge-tree", "--write-tree", head, commit, cwd=repo)
        # Exit 1: conflicts. Other failures are git's, except histories that cannot merge.
        if result.returncode != 1 and result.returncode != 0 \
                and "unrelated histories" not in result.stderr:
            raise GitError(f"git merge-tree --write-tree {head} {commit} failed in {repo} "
                           f"(exit {result.returncode}): {result.stderr.strip()}",
                           returncode=result.returncode, stdout=result.stdout,
                           stderr=result.stderr)
        if result.returncode != 0:
            raise MergeConflict(change, _conflict_summary(result.stdout, result.stderr))
        tree = result.stdout.split("\n", 1)[0].strip()
        head_tree = head_tree or await _tree(repo, head)
        # The same tree as the head: either nothing to merge (the commit is in the head
        # already: `git merge` commits nothing) or a merge that changes no file (it commits).
        if tree != head_tree or not await _is_ancestor(repo, commit, head):
            head = await writer.write(merge_commit_text(tree, [head, commit], change,
                                                        merge_date))
        made.set_result((head, tree))
        return head, tree
    finally:
        if made.done():
            known.add(key, head, tree)
        else:
            made.set_result(None)  # failed: whoever waits makes it (and fails) on their own
            if known.made.get(key) is made:
                del known.made[key]


async def _merge_in_worktree(workdir: Path, head: str, merges: Sequence[tuple[ChangeRef, str]],
                             merge_date: int, learned: list[tuple[str, str]] | None, *,
                             objects: Path | None = None) -> str:
    """The merges with `git merge` in `workdir` (objects in `objects` when given)."""
    env = merge_env(merge_date)
    if objects is not None:
        env["GIT_OBJECT_DIRECTORY"] = str(objects)
    await git("checkout", "--quiet", "--force", "--detach", head, cwd=workdir, env=env)
    for change, commit in merges:
        parent = head
        try:
            await git(
                "merge", "--no-ff", "--no-edit", "--no-log", "--no-stat", "--no-verify",
                "--no-signoff", "--strategy=ort", "-m", merge_message(change), commit,
                cwd=workdir, env=env,
            )
        except GitError as exc:
            summary = _conflict_summary(exc.stdout, str(exc))
            await git("merge", "--abort", cwd=workdir, env=env, check=False)
            raise MergeConflict(change, summary) from None
        head = (await git("rev-parse", "HEAD", cwd=workdir, env=env)).strip()
        if learned is not None:
            learned.append((memo_key(parent, change, commit, merge_date), head))
    return head


async def _tree(repo: Path, commit: str) -> str:
    return (await git("rev-parse", f"{commit}^{{tree}}", cwd=repo)).strip()


async def _is_ancestor(repo: Path, commit: str, head: str) -> bool:
    result = await run_git("merge-base", "--is-ancestor", commit, head, cwd=repo)
    if result.returncode not in (0, 1):
        raise GitError(f"git merge-base --is-ancestor {commit} {head} failed in {repo}: "
                       f"{result.stderr.strip()}", returncode=result.returncode,
                       stdout=result.stdout, stderr=result.stderr)
    return result.returncode == 0


# commit -> whether its tree has a .gitattributes file anywhere. Commits are immutable and named
# by their content, so the answer holds in every repository.
_ATTRIBUTES: dict[str, bool] = {}
_ATTRIBUTES_MAX = 20_000


async def _carry_attributes(repo: Path, commits: Sequence[str]) -> bool:
    unknown = [c for c in dict.fromkeys(commits) if c not in _ATTRIBUTES]
    found = await asyncio.gather(*(_tree_has_attributes(repo, c) for c in unknown))
    if len(_ATTRIBUTES) + len(unknown) > _ATTRIBUTES_MAX:
        _ATTRIBUTES.clear()
    answers = {c: _ATTRIBUTES[c] for c in commits if c in _ATTRIBUTES}
    answers.update(zip(unknown, found, strict=True))
    _ATTRIBUTES.update(zip(unknown, found, strict=True))
    return any(answers.values())


async def _tree_has_attributes(repo: Path, commit: str) -> bool:
    out = await git("ls-tree", "-r", "-z", "--name-only", commit, cwd=repo)
    return any(path == ".gitattributes" or path.endswith("/.gitattributes")
               for path in out.split("\0"))


async def _read_memo_refs(repo: Path, known: _Merges) -> None:
    """Learn every merge the memo refs remember, with its tree (one git call)."""
    out = await git("for-each-ref", "--format=%(refname) %(objectname) %(tree)", MEMO_PREFIX,
                    cwd=repo)
    for line in out.splitlines():
        ref, sha, tree = line.split(" ")
        key = ref.removeprefix(MEMO_PREFIX)
        if key not in known.made:
            known.add(key, sha, tree)
    known.refs_read = True


def _conflict_summary(stdout: str, otherwise: str) -> str:
    # git reports each conflicted path on stdout as "CONFLICT (<kind>): ... <path>".
    lines = [line.strip() for line in stdout.splitlines() if line.startswith("CONFLICT")]
    return "; ".join(lines) if lines else (otherwise.strip() or "git could not merge")
