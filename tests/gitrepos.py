"""Build bare "review system" repositories in tmp dirs for tests, the way Gerrit stores them:
branches under refs/heads/, patchsets under refs/changes/NN/NUMBER/PATCHSET.

Commits are written with plumbing (no working tree), with a fixed identity and increasing
fixed dates, so tests are fast and their shas are the same on every run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from lockmaster.model.change import ChangeRef, change_ref_name

Files = Mapping[str, str | None]  # path -> content; None deletes the file

_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "LC_ALL": "C",
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.org",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.org",
}


def run_git(*args: str, cwd: Path, env: Mapping[str, str] | None = None,
            input: str | None = None) -> str:
    """Run git synchronously with a fixed environment; raise with git's stderr on failure."""
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **_ENV, **(env or {})}
    proc = subprocess.run(["git", *args], cwd=cwd, env=full_env, input=input,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def change_id_for(project: str, number: int) -> str:
    """A stable Gerrit-style Change-Id for a test change."""
    return "I" + hashlib.sha1(f"{project}#{number}".encode()).hexdigest()


class ReviewSite:
    """The review system's repositories: one bare repository per project under `root`."""

    def __init__(self, root: Path, date: int = 1_600_000_000) -> None:
        self.root = Path(root)
        self._date = date  # each commit gets the next second

    def repo(self, project: str) -> Path:
        return self.root / f"{project}.git"

    def url_for(self, connection: str, project: str) -> str:
        """RepoCache's url_for: the same repositories serve every connection."""
        return str(self.repo(project))

    def create_project(self, project: str, branch: str = "master",
                       files: Files | None = None) -> str:
        """A bare repository with one commit on `branch`; returns that commit."""
        repo = self.repo(project)
        repo.mkdir(parents=True)
        run_git("init", "--bare", "--quiet", "--initial-branch", branch, str(repo), cwd=self.root)
        return self._commit(project, f"refs/heads/{branch}", None,
                            files or {"README": f"{project}\n"}, f"Initial {project}\n")

    def commit_to_branch(self, project: str, branch: str, files: Files,
                         message: str = "Upstream change\n") -> str:
        """A commit directly on the branch (what merging something upstream does)."""
        return self._commit(project, f"refs/heads/{branch}", f"refs/heads/{branch}", files,
                            message)

    def create_branch(self, project: str, branch: str, start: str = "master") -> str:
        sha = self.rev_parse(project, start)
        run_git("update-ref", f"refs/heads/{branch}", sha, cwd=self.repo(project))
        return sha

    def push_change(self, project: str, number: int, patchset: int = 1, *,
                    files: Files | None = None, message: str | None = None,
                    parent: str | None = None, branch: str = "master",
                    change_id: str | None = None, connection: str = "gerrit") -> ChangeRef:
        """Upload a patchset: a commit on `parent` (default the branch tip; a sha or a ref,
        e.g. another change's commit for a stack) stored at refs/changes/NN/NUMBER/PATCHSET.
        The message gets a Change-Id footer unless it has one."""
        change_id = change_id or change_id_for(project, number)
        text = message if message is not None else f"Change {number} of {project}\n"
        if "Change-Id:" not in text:
            text = text.rstrip("\n") + f"\n\nChange-Id: {change_id}\n"
        ref = change_ref_name(number, patchset)
        sha = self._commit(project, ref, parent or f"refs/heads/{branch}",
                           files if files is not None else {f"change{number}.txt": f"{number}\n"},
                           text)
        return ChangeRef(connection=connection, project=project, branch=branch, number=number,
                         patchset=patchset, commit=sha, change_id=change_id)

    def rev_parse(self, project: str, rev: str) -> str:
        return run_git("rev-parse", "--verify", f"{rev}^{{commit}}",
                       cwd=self.repo(project)).strip()

    def _commit(self, project: str, ref: str, parent: str | None, files: Files,
                message: str) -> str:
        repo = self.repo(project)
        self._date += 1
        date = f"{self._date} +0000"
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"),
                   "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
            parent_sha = self.rev_parse(project, parent) if parent else None
            if parent_sha:
                run_git("read-tree", parent_sha, cwd=repo, env=env)
            for path, content in files.items():
                if content is None:
                    run_git("update-index", "--force-remove", path, cwd=repo, env=env)
                    continue
                blob = run_git("hash-object", "-w", "--stdin", cwd=repo, input=content).strip()
                run_git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}",
                        cwd=repo, env=env)
            tree = run_git("write-tree", cwd=repo, env=env).strip()
            parents = ["-p", parent_sha] if parent_sha else []
            sha = run_git("commit-tree", tree, *parents, cwd=repo, env=env, input=message).strip()
        run_git("update-ref", ref, sha, cwd=repo)
        return sha
