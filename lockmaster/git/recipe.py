"""The merge recipe: how a speculative head is built from a base and changes, bit for bit.

The merger and the workspace preparer both call `apply_merges`; anyone replaying it with the
same base, change commits and merge date (and the same git) gets the same head sha. That is
what lets a workspace prove it checked out exactly the state the gate tested.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from lockmaster.git.runner import GitError, git, run_git
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


async def apply_merges(workdir: Path, base: str, merges: Sequence[tuple[ChangeRef, str]],
                       merge_date: int, *, memo: Path | None = None,
                       learned: list[tuple[str, str]] | None = None) -> str:
    """Check out `base` detached in `workdir` and merge each (change, commit) in order.

    Every merge is `--no-ff`, so a change that could fast-forward still gets its own merge
    commit (one rule, no special case); a commit already contained in HEAD merges to nothing.
    Returns the resulting HEAD; raises MergeConflict (with the tree cleaned up) on conflict.

    `memo`: a repository whose `refs/lockmaster/merges/<key>` remember earlier merges (and
    whose objects `workdir` can read): a leading run of merges found there is not redone.
    New merges are appended to `learned` as (key, commit) for the caller to remember once the
    commits are stored where `memo` can see them.
    """
    env = merge_env(merge_date)
    head = base
    remaining = list(merges)
    known = await _memo_table(memo) if memo is not None and remaining else {}
    while remaining:
        change, commit = remaining[0]
        found = known.get(memo_key(head, change, commit, merge_date))
        if found is None:
            break
        head = found
        remaining.pop(0)
    await git("checkout", "--quiet", "--force", "--detach", head, cwd=workdir)
    for change, commit in remaining:
        parent = head
        try:
            await git(
                "merge", "--no-ff", "--no-edit", "--no-log", "--no-stat", "--no-verify",
                "--no-signoff", "--strategy=ort", "-m", merge_message(change), commit,
                cwd=workdir, env=env,
            )
        except GitError as exc:
            summary = _conflict_summary(exc)
            await git("merge", "--abort", cwd=workdir, check=False)
            raise MergeConflict(change, summary) from None
        head = (await git("rev-parse", "HEAD", cwd=workdir)).strip()
        if learned is not None:
            learned.append((memo_key(parent, change, commit, merge_date), head))
    return head


async def _memo_table(repo: Path) -> dict[str, str]:
    """Every remembered merge, in one git call (key -> merge commit)."""
    out = await run_git("for-each-ref", "--format=%(refname) %(objectname)", MEMO_PREFIX,
                        cwd=repo)
    table = {}
    for line in out.stdout.splitlines():
        ref, _, sha = line.partition(" ")
        table[ref.removeprefix(MEMO_PREFIX)] = sha
    return table


def _conflict_summary(exc: GitError) -> str:
    # git reports each conflicted path on stdout as "CONFLICT (<kind>): ... <path>".
    lines = [line.strip() for line in exc.stdout.splitlines() if line.startswith("CONFLICT")]
    return "; ".join(lines) if lines else str(exc)
