"""The local review connection: the embedded default review system.

Bare git repositories on disk (`<root>/<project>.git`), changes as Gerrit-style refs
(`refs/changes/NN/N/P`), and change records (status, approvals, messages) as JSON files under
`<root>/changes/`, guarded by a file lock so the CLI and workers can share them. It answers the
same questions the Gerrit driver answers, so the pipelines cannot tell the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lockmaster.git.footers import depends_on
from lockmaster.model.change import ChangeInfo, ChangeRef, ReviewEvent, change_ref_name
from lockmaster.model.report import ReportRequest, ReportResult
from lockmaster.review.base import ChangeNotFound, ReviewError, SubmitRefused
from lockmaster.util.file_lock import locked

log = logging.getLogger(__name__)

_GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "lockmaster user",
    "GIT_AUTHOR_EMAIL": "user@localhost",
    "GIT_COMMITTER_NAME": "lockmaster user",
    "GIT_COMMITTER_EMAIL": "user@localhost",
}


def _git(*args: str, cwd: Path | str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **_GIT_ENV, **(env or {})},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ReviewError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


class LocalReviewStore:
    """Synchronous store; the driver and the `lockmaster change` commands both use it."""

    def __init__(self, root: Path, connection: str = "local") -> None:
        self.root = root
        self.connection = connection
        (root / "changes").mkdir(parents=True, exist_ok=True)

    # --- locking and records ----------------------------------------------------------------

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.root / ".lock")

    def _path(self, number: int) -> Path:
        return self.root / "changes" / f"{number}.json"

    def _read(self, number: int) -> dict[str, Any]:
        try:
            return json.loads(self._path(number).read_text())
        except FileNotFoundError:
            raise ChangeNotFound(f"change {number} does not exist on connection "
                                 f"{self.connection!r}") from None

    def _write(self, record: dict[str, Any]) -> None:
        path = self._path(record["number"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        tmp.replace(path)  # atomic: readers never see half a record

    def numbers(self) -> list[int]:
        return sorted(int(p.stem) for p in (self.root / "changes").glob("*.json"))

    def record(self, number: int) -> dict[str, Any]:
        return self._read(number)

    # --- projects ---------------------------------------------------------------------------

    def repo(self, project: str) -> Path:
        return self.root / f"{project}.git"

    def has_project(self, project: str) -> bool:
        return self.repo(project).exists()

    def create_project(self, project: str, files: dict[str, str], branch: str = "master") -> str:
        """A bare repository whose `branch` holds `files`; returns the commit. Idempotent."""
        repo = self.repo(project)
        if repo.exists():
            return _git("rev-parse", f"refs/heads/{branch}", cwd=repo)
        repo.parent.mkdir(parents=True, exist_ok=True)
        _git("init", "--bare", "--initial-branch", branch, str(repo), cwd=self.root)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            _git("init", "--initial-branch", branch, ".", cwd=work)
            _write_files(work, files)
            _git("add", "-A", cwd=work)
            _git("commit", "-m", f"Initial commit of {project}", cwd=work)
            _git("push", str(repo), f"HEAD:refs/heads/{branch}", cwd=work)
            return _git("rev-parse", "HEAD", cwd=work)

    def branch_tip(self, project: str, branch: str) -> str:
        return _git("rev-parse", f"refs/heads/{branch}", cwd=self.repo(project))

    # --- changes ----------------------------------------------------------------------------

    def upload(
        self,
        project: str,
        *,
        branch: str = "master",
        files: dict[str, str],
        subject: str,
        parent: int | None = None,
        depends_on: list[int] | None = None,
        owner: str = "developer",
        number: int | None = None,
        tree: Path | None = None,
    ) -> ChangeInfo:
        """A new change (patchset 1) on top of the branch tip, or of change `parent`. `number`:
        this one rather than the next free one (simulations number changes in their own order).
        `tree`: a directory whose files (modes kept, binary or not) the change adds first."""
        if not self.has_project(project):
            raise ReviewError(f"project {project!r} does not exist on connection "
                              f"{self.connection!r}")
        with self._locked():
            if number is None:
                number = max(self.numbers(), default=0) + 1
            elif self._path(number).exists():
                raise ReviewError(f"change {number} already exists")
            change_id = "I" + hashlib.sha1(f"{project}{number}{time.time()}".encode()).hexdigest()
            footers = [f"Depends-On: {self.change_url(d)}" for d in depends_on or []]
            footers.append(f"Change-Id: {change_id}")
            message = f"{subject}\n\n" + "\n".join(footers) + "\n"
            base = self._current_commit(parent) if parent else f"refs/heads/{branch}"
            commit = self._commit(project, base, files, message, change_ref_name(number, 1),
                                  tree=tree)
            record = {
                "number": number, "project": project, "branch": branch,
                "change_id": change_id, "status": "NEW", "owner": owner,
                "subject": subject, "message": message,
                "patchsets": [{"number": 1, "commit": commit, "uploaded": time.time()}],
                "approvals": {}, "messages": [], "wip": False, "private": False,
            }
            self._write(record)
        return self._info(record)

    def new_patchset(self, number: int, files: dict[str, str] | None = None) -> ChangeInfo:
        """The next patchset: the same change amended (on the same parent), with more files."""
        with self._locked():
            record = self._read(number)
            self._require_open(record)
            current = record["patchsets"][-1]
            parent = _git("rev-parse", f"{current['commit']}^", cwd=self.repo(record["project"]))
            ps = current["number"] + 1
            tree_files = files or {f".patchset-{ps}": f"patchset {ps}\n"}
            commit = self._commit(
                record["project"], parent, tree_files, record["message"],
                change_ref_name(number, ps), carry=current["commit"],
            )
            record["patchsets"].append({"number": ps, "commit": commit, "uploaded": time.time()})
            record["approvals"] = {}  # votes do not carry over to a new patchset (Gerrit default)
            self._write(record)
        return self._info(record)

    def vote(
        self, number: int, labels: dict[str, int], *, author: str, message: str = ""
    ) -> ChangeInfo:
        with self._locked():
            record = self._read(number)
            self._require_open(record)
            for label, value in labels.items():
                record["approvals"].setdefault(label, {})[author] = value
            ps = record["patchsets"][-1]["number"]
            text = f"Patch Set {ps}:" + "".join(f" {k}{v:+d}" for k, v in labels.items())
            if message:
                text += f"\n\n{message}"
            record["messages"].append({"author": author, "message": text, "labels": labels,
                                       "tag": None, "patchset": ps, "at": time.time()})
            self._write(record)
        return self._info(record)

    def abandon(self, number: int, *, author: str) -> ChangeInfo:
        with self._locked():
            record = self._read(number)
            self._require_open(record)
            record["status"] = "ABANDONED"
            self._note(record, author, "Abandoned")
            self._write(record)
        return self._info(record)

    def restore(self, number: int, *, author: str) -> ChangeInfo:
        """An abandoned change back to NEW (Gerrit's Restore)."""
        with self._locked():
            record = self._read(number)
            if record["status"] != "ABANDONED":
                raise ReviewError(f"change {number} is {record['status'].lower()}: only an "
                                  "abandoned change can be restored")
            record["status"] = "NEW"
            self._note(record, author, "Restored")
            self._write(record)
        return self._info(record)

    def delete_vote(self, number: int, label: str, *, author: str) -> ChangeInfo:
        """Remove `author`'s vote on `label` from the current patchset (Gerrit's Delete Vote)."""
        with self._locked():
            record = self._read(number)
            self._require_open(record)
            votes = record["approvals"].get(label) or {}
            if author not in votes:
                raise ReviewError(f"change {number} has no {label} vote by {author} "
                                  f"({_describe_votes(record['approvals'])})")
            old = votes.pop(author)
            if not votes:
                del record["approvals"][label]
            self._note(record, author, f"Removed {label}{old:+d} by {author}")
            self._write(record)
        return self._info(record)

    def set_wip(self, number: int, wip: bool, *, author: str) -> ChangeInfo:
        """Mark the change work in progress, or ready for review (wip=False)."""
        if wip:
            return self._set_flag(number, "wip", True, author, "Set Work In Progress",
                                  state="a work in progress")
        return self._set_flag(number, "wip", False, author, "Set Ready For Review",
                              state="ready for review")

    def set_private(self, number: int, private: bool, *, author: str) -> ChangeInfo:
        if private:
            return self._set_flag(number, "private", True, author, "Set private", state="private")
        return self._set_flag(number, "private", False, author, "Unset private", state="public")

    def post_report(self, report: ReportRequest) -> ReportResult:
        with self._locked():
            record = self._read(report.change.number)
            if any(m.get("tag") == report.tag for m in record["messages"]):
                return ReportResult(posted=False)
            for label, value in report.labels.items():
                record["approvals"].setdefault(label, {})["lockmaster"] = value
            record["messages"].append({
                "author": "lockmaster", "message": report.message, "labels": report.labels,
                "tag": report.tag, "patchset": report.change.patchset, "at": time.time(),
            })
            self._write(record)
        return ReportResult(posted=True)

    def submit(self, change: ChangeRef, *, announce: bool = False) -> str:
        """Merge the given patchset, which must be the change's current one (a merge commit, as
        Gerrit's merge-always); returns the merged commit. `announce`: the merge is owed a
        change-merged event (the driver's merges; see LocalReviewDriver.announce_merges)."""
        with self._locked():
            record = self._read(change.number)
            if record["status"] != "NEW":
                raise SubmitRefused(f"change {change.number} is {record['status']}")
            if record.get("wip"):  # as Gerrit: a WIP change is not submittable
                raise SubmitRefused(f"change {change.number} cannot be submitted: change is a "
                                    "work in progress")
            current = record["patchsets"][-1]
            if change.patchset != current["number"] or change.commit not in (None,
                                                                             current["commit"]):
                raise SubmitRefused(
                    f"patchset {change.patchset} of change {change.number} is not its current "
                    f"revision (patchset {current['number']} is): the tested code is not what "
                    "would merge")
            repo = self.repo(record["project"])
            commit = current["commit"]
            branch = record["branch"]
            message = f"Merge change {change.number}"
            tip = _git("rev-parse", f"refs/heads/{branch}", cwd=repo)
            if _has_attributes(repo, tip, commit):
                merged = _merge_in_worktree(repo, branch, commit, message, change.number)
            else:
                merged = _merge_in_place(repo, branch, tip, commit, message, change.number)
            record["status"] = "MERGED"
            record["merged_commit"] = merged
            if announce:
                # Until the change-merged event is handed over (LocalReviewDriver.
                # announce_merges): a merge whose announcement failed is announced again.
                record["announced"] = False
            self._write(record)
        return merged

    def unannounced(self) -> list[int]:
        """Merged changes whose change-merged event was not handed over yet, in merge order
        (records from before announcements were kept count as announced)."""
        with self._locked():
            records = [json.loads(p.read_text()) for p in (self.root / "changes").glob("*.json")]
        pending = [r for r in records if r.get("status") == "MERGED" and
                   r.get("announced") is False]
        return [r["number"] for r in sorted(pending, key=lambda r: self._path(r["number"])
                                            .stat().st_mtime)]

    def mark_announced(self, number: int) -> None:
        with self._locked():
            record = self._read(number)
            record["announced"] = True
            self._write(record)

    # --- answers ----------------------------------------------------------------------------

    def info(self, number: int) -> ChangeInfo:
        return self._info(self._read(number))

    def find_change_id(self, change_id: str) -> list[ChangeInfo]:
        return [self._info(r) for n in self.numbers()
                if (r := self._read(n))["change_id"] == change_id]

    def change_url(self, number: int) -> str:
        return f"local://{self.connection}/{number}"

    def needed_by(self, change: ChangeInfo) -> list[ChangeInfo]:
        """Open changes built on `change`'s current patchset or naming it in `Depends-On:`."""
        host = urlsplit(change.url or "").netloc.lower()
        named, same_project = [], []
        for number in self.numbers():
            record = self._read(number)
            if record["status"] != "NEW" or (
                    change.connection == self.connection and number == change.number):
                continue
            info = self._info(record)
            if any((dep.number == change.number and dep.host == host)
                   or (dep.change_id is not None and dep.change_id == change.change_id
                       and change.connection == self.connection)
                   for dep in depends_on(info.message)):
                named.append(info)
            elif change.connection == self.connection and info.project == change.project:
                same_project.append(info)
        children = []
        if same_project:
            # One git call for all of them: "<commit> <parent>..." per line.
            lines = _git("log", "--no-walk=unsorted", "--format=%H %P",
                         *[i.commit for i in same_project], cwd=self.repo(change.project))
            parents = {line.split()[0]: line.split()[1:] for line in lines.splitlines() if line}
            children = [i for i in same_project if change.commit in parents.get(i.commit, [])]
        return sorted(named + children, key=lambda i: i.number)

    # --- internals --------------------------------------------------------------------------

    def _info(self, record: dict[str, Any]) -> ChangeInfo:
        ps = record["patchsets"][-1]
        approvals = {label: max(votes.values()) if max(votes.values()) > 0 else min(votes.values())
                     for label, votes in record["approvals"].items() if votes}
        return ChangeInfo(
            connection=self.connection, project=record["project"], branch=record["branch"],
            number=record["number"], patchset=ps["number"], status=record["status"],
            commit=ps["commit"], change_id=record["change_id"],
            url=self.change_url(record["number"]), message=record["message"],
            approvals=approvals,
            # Records written before these flags existed have neither key.
            wip=record.get("wip", False), private=record.get("private", False),
            revisions={p["commit"]: p["number"] for p in record["patchsets"]},
        )

    def _set_flag(self, number: int, key: str, value: bool, author: str, message: str, *,
                  state: str) -> ChangeInfo:
        """Set the record's wip/private flag; setting it to what it already is is refused (as
        Gerrit does), so every successful call is a real state change worth an event."""
        with self._locked():
            record = self._read(number)
            self._require_open(record)
            if record.get(key, False) == value:
                raise ReviewError(f"change {number} is already {state}")
            record[key] = value
            self._note(record, author, message)
            self._write(record)
        return self._info(record)

    @staticmethod
    def _note(record: dict[str, Any], author: str, text: str) -> None:
        """A change message without votes, on the current patchset."""
        record["messages"].append({"author": author, "message": text, "labels": {}, "tag": None,
                                   "patchset": record["patchsets"][-1]["number"],
                                   "at": time.time()})

    def _current_commit(self, number: int) -> str:
        return self._read(number)["patchsets"][-1]["commit"]

    @staticmethod
    def _require_open(record: dict[str, Any]) -> None:
        if record["status"] != "NEW":
            raise ReviewError(f"change {record['number']} is {record['status'].lower()}")

    def _commit(self, project: str, base: str, files: dict[str, str], message: str, ref: str,
                carry: str | None = None, tree: Path | None = None) -> str:
        repo = self.repo(project)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            _git("init", "--quiet", ".", cwd=work)
            _git("fetch", "--quiet", str(repo), base if not base.startswith("refs/") else
                 f"{base}:refs/base", cwd=work)
            _git("checkout", "--quiet", "--detach", "FETCH_HEAD", cwd=work)
            if carry:  # a new patchset keeps the previous patchset's files
                _git("fetch", "--quiet", str(repo), carry, cwd=work)
                _git("checkout", "--quiet", "FETCH_HEAD", "--", ".", cwd=work)
            if tree is not None:  # as `cp -a`: modes (debian/rules, configure) stay
                shutil.copytree(tree, work, symlinks=True, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns(".git"))
            _write_files(work, files)
            _git("add", "-A", cwd=work)
            _git("commit", "--quiet", "--allow-empty", "-m", message, cwd=work)
            _git("push", "--quiet", str(repo), f"HEAD:{ref}", cwd=work)
            return _git("rev-parse", "HEAD", cwd=work)


def _describe_votes(approvals: dict[str, dict[str, int]]) -> str:
    votes = [f"{label} {who} {value:+d}" for label, by_user in sorted(approvals.items())
             for who, value in by_user.items()]
    return "votes: " + ", ".join(votes) if votes else "it has no votes"


def _has_attributes(repo: Path, *commits: str) -> bool:
    """Merge drivers in .gitattributes (merge=union, ...) need a worktree merge."""
    return any(subprocess.run(["git", "cat-file", "-e", f"{c}:.gitattributes"], cwd=repo,
                              capture_output=True).returncode == 0 for c in commits)


def _merge_in_place(repo: Path, branch: str, tip: str, commit: str, message: str,
                    number: int) -> str:
    """`git merge --no-ff` without a worktree: merge-tree, commit-tree, then move the branch
    only if nobody else moved it meanwhile (update-ref with the old value)."""
    merge = subprocess.run(["git", "merge-tree", "--write-tree", tip, commit], cwd=repo,
                           capture_output=True, text=True,
                           env={**os.environ, **_GIT_ENV})
    if merge.returncode == 1:
        why = "; ".join(line for line in merge.stdout.splitlines()[1:] if line.strip())
        raise SubmitRefused(f"change {number} does not merge: {why or merge.stderr.strip()}")
    if merge.returncode != 0:
        raise ReviewError(f"git merge-tree failed: {merge.stderr.strip()}")
    tree = merge.stdout.split()[0]
    merged = _git("commit-tree", tree, "-p", tip, "-p", commit, "-m", message, cwd=repo)
    _git("update-ref", f"refs/heads/{branch}", merged, tip, cwd=repo)
    return merged


def _merge_in_worktree(repo: Path, branch: str, commit: str, message: str, number: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _git("clone", "--quiet", "--branch", branch, str(repo), ".", cwd=work)
        _git("fetch", "--quiet", "origin", commit, cwd=work)
        try:
            _git("merge", "--no-ff", "-m", message, commit, cwd=work)
        except ReviewError as exc:
            raise SubmitRefused(f"change {number} does not merge: {exc}") from None
        _git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
        return _git("rev-parse", "HEAD", cwd=work)


def _write_files(work: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        if content.startswith("#!"):  # scripts keep their executable bit, as in any repository
            path.chmod(0o755)


class LocalReviewDriver:
    """The ReviewDriver for a local connection (async wrapper over the store)."""

    def __init__(self, name: str, root: Path) -> None:
        self.connection = name
        self.store = LocalReviewStore(root, name)
        # Told of every merge this driver makes, as Gerrit announces it with a change-merged
        # event (the worker routes it, e.g. to publish the packages).
        self.on_merged: Callable[[ReviewEvent], Awaitable[object]] | None = None

    async def get_change(self, number: int) -> ChangeInfo:
        return await asyncio.to_thread(self.store.info, number)

    async def find_change_id(self, change_id: str) -> list[ChangeInfo]:
        return await asyncio.to_thread(self.store.find_change_id, change_id)

    async def needed_by(self, change: ChangeInfo) -> list[ChangeInfo]:
        return await asyncio.to_thread(self.store.needed_by, change)

    async def post_report(self, report: ReportRequest) -> ReportResult:
        return await asyncio.to_thread(self.store.post_report, report)

    async def submit(self, change: ChangeRef) -> None:
        """Merge, then announce every merge not announced yet. A failed announcement fails the
        submit (the merge stands): the activity's retry finds the change merged and announces
        it again, so a merged change is always published."""
        try:
            await asyncio.to_thread(functools.partial(self.store.submit, change, announce=True))
        except SubmitRefused:
            await self.announce_merges()  # an earlier attempt may have merged it, unannounced
            raise
        await self.announce_merges()

    async def announce_merges(self) -> int:
        """Hand over a change-merged event for each merge not announced yet, oldest first;
        returns how many. Raises ReviewError (retry) when a hand-off fails."""
        pending = await asyncio.to_thread(self.store.unannounced)
        if self.on_merged is None:  # nothing listens (no project publishes): nothing owed
            for number in pending:
                await asyncio.to_thread(self.store.mark_announced, number)
            return 0
        done = 0
        for number in pending:
            info = await self.get_change(number)
            record = await asyncio.to_thread(self.store._read, number)
            try:
                await self.on_merged(ReviewEvent(
                    type="change-merged", connection=info.connection, project=info.project,
                    branch=info.branch, change=info.number, patchset=info.patchset,
                    commit=info.commit, change_id=info.change_id, url=info.url,
                    author="lockmaster", newrev=record.get("merged_commit")))
            except Exception as exc:
                raise ReviewError(
                    f"change {number} is merged, but handing over its change-merged event "
                    f"failed ({type(exc).__name__}: {exc}); it is announced again on the next "
                    "try") from exc
            await asyncio.to_thread(self.store.mark_announced, number)
            done += 1
        return done

    def git_url(self, project: str) -> str:
        return str(self.store.repo(project))

    def change_url(self, number: int) -> str:
        return self.store.change_url(number)

    async def aclose(self) -> None:
        return None
