"""Provenance: the stable repository only ever contains packages built by lockmaster from
merged commits; the publish step refuses anything else, before changing anything.

Input: the package builder's manifest (JSON; unknown keys ignored)
    {"source_commit": "<sha>", "packages": [{"file": "deb/x_1.0_all.deb", "format": "deb",
      "name": ..., "version": ..., "arch": ..., "sha256": ..., "size": ...}]}
plus the directory holding the files, a git repository and a branch. Refused (ProvenanceError)
when the manifest has no source_commit, the commit is not reachable from the branch tip
(`git merge-base --is-ancestor`), a listed file is missing, outside the directory, or differs
from the manifest in size or sha256, the package's own name/version/architecture differ from
the manifest's, or the directory holds a package file the manifest does not list.

A promoted gate build (PromotedSource) was built from the gate's speculative merge commit,
which is not on the branch: its source_commit must be that tested commit, the merged commit
must be reachable from the branch tip, and the merged commit's tree must be the tested tree
(`git rev-parse <commit>^{tree}`): the same tree is the same source, so the packages are
what building the merged commit would have given, and they are the ones that were tested.

The files to publish are first copied into a private directory and the copies are checked, so
a file changed after the check can never reach the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from lockmaster.publishing.errors import InvalidInput, ProvenanceError
from lockmaster.publishing.metadata import MetadataError, parse_deb822
from lockmaster.publishing.model import (
    BuildManifest,
    ManifestPackage,
    PackageFormat,
    PromotedSource,
)
from lockmaster.publishing.tools import Heartbeat, Progress, is_plain_relative, run, sha256_file

PACKAGE_SUFFIXES = (".deb", ".udeb", ".ddeb", ".rpm")
COMMIT_RE = re.compile(r"^([0-9a-f]{40}|[0-9a-f]{64})$")


@dataclass(frozen=True)
class StagedPackage:
    """A manifest entry and the private, checked copy of its file."""

    entry: ManifestPackage
    path: Path
    source_commit: str


def load_manifest(path: Path) -> BuildManifest:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InvalidInput(f"build manifest {path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"build manifest {path} is not readable JSON: {exc}") from exc
    try:
        return BuildManifest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(f"build manifest {path} does not have the expected shape "
                           f"(source_commit, packages[file, format, name, version, arch, "
                           f"sha256, size]): {exc}") from exc


def check_source_commit(git_repo: Path, commit: str | None, branch: str,
                        progress: Progress | None = None) -> str:
    """The commit, if it is a full sha reachable from the branch tip; ProvenanceError if not."""
    if not commit:
        raise ProvenanceError("the build manifest has no source_commit: only packages built "
                              "from a merged commit can be published (rebuild after merge)")
    commit = commit.strip().lower()
    if not COMMIT_RE.match(commit):
        raise ProvenanceError(f"source_commit {commit!r} is not a full commit id (40 or 64 hex "
                              "digits); the package builder must record the exact commit")
    ref = branch if branch.startswith("refs/") else f"refs/heads/{branch}"
    tip = run(["git", "-C", str(git_repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
              what="git rev-parse", progress=progress, ok=(0, 1, 128))
    if tip.returncode != 0:
        raise ProvenanceError(f"branch {branch!r} ({ref}) does not exist in {git_repo}; "
                              "publish from the repository the change was merged into")
    known = run(["git", "-C", str(git_repo), "cat-file", "-e", f"{commit}^{{commit}}"],
                what="git cat-file", progress=progress, ok=(0, 1, 128))
    if known.returncode != 0:
        raise ProvenanceError(f"source_commit {commit} is not a commit of {git_repo}: it was "
                              f"never merged there (or the repository is not up to date: fetch "
                              f"{branch} and retry)")
    merged = run(["git", "-C", str(git_repo), "merge-base", "--is-ancestor", commit, ref],
                 what="git merge-base --is-ancestor", progress=progress, ok=(0, 1))
    if merged.returncode != 0:
        raise ProvenanceError(f"source_commit {commit} is not merged: it is not reachable from "
                              f"the tip of {branch} ({tip.stdout.strip()}) in {git_repo}; only "
                              "packages built from merged commits are published")
    return commit


def check_promoted_source(git_repo: Path, commit: str | None, branch: str,
                          promoted: PromotedSource, progress: Progress | None = None
                          ) -> tuple[str, str]:
    """(the source commit, what was checked) for a promoted gate build; ProvenanceError if
    its manifest is not the tested commit's or the merged commit's tree is not the tested
    one."""
    if not commit:
        raise ProvenanceError("the gate build's manifest has no source_commit: cannot tell "
                              "which commit it was built from")
    commit = commit.strip().lower()
    tested = promoted.tested_commit.strip().lower()
    if commit != tested:
        raise ProvenanceError(f"the gate build's manifest names source_commit {commit}, but "
                              f"the gate tested {tested}: refusing a build of another commit")
    merged = check_source_commit(git_repo, promoted.merged_commit, branch, progress)
    found = run(["git", "-C", str(git_repo), "rev-parse", "--verify", "--quiet",
                 f"{merged}^{{tree}}"], what="git rev-parse ^{tree}", progress=progress,
                ok=(0, 1, 128))
    merged_tree = found.stdout.strip()
    if found.returncode != 0 or merged_tree != promoted.tested_tree.strip().lower():
        raise ProvenanceError(
            f"the merged commit {merged} has tree {merged_tree or '?'}, the gate tested tree "
            f"{promoted.tested_tree} ({tested}): the gate's build is not of the merged source; "
            "rebuild from the merged commit")
    # The tested commit is usually not here (the merger made it); when it is, it must agree.
    own = run(["git", "-C", str(git_repo), "rev-parse", "--verify", "--quiet",
               f"{tested}^{{tree}}"], what="git rev-parse ^{tree}", progress=progress,
              ok=(0, 1, 128))
    if own.returncode == 0 and own.stdout.strip() != merged_tree:
        raise ProvenanceError(f"the tested commit {tested} has tree {own.stdout.strip()}, not "
                              f"{merged_tree} as claimed: refusing the gate's build")
    return commit, (f"provenance: the gate's build of {tested} (its speculative merge), tree "
                    f"{merged_tree} = the tree of merged commit {merged} on {branch}")


def _deb_fields(path: Path, progress: Progress | None) -> tuple[str, str, str]:
    found = run(["dpkg-deb", "--field", str(path), "Package", "Version", "Architecture"],
                what=f"dpkg-deb --field {path.name}", progress=progress, ok=range(0, 256))
    try:
        fields = parse_deb822(found.stdout)[0] if found.returncode == 0 else {}
    except (MetadataError, IndexError):
        fields = {}
    if not {"Package", "Version", "Architecture"} <= fields.keys():
        raise ProvenanceError(f"{path.name} is not a readable .deb package: "
                              f"{found.stderr.strip() or found.stdout.strip()}")
    return fields["Package"], fields["Version"], fields["Architecture"]


def _rpm_fields(path: Path, progress: Progress | None) -> tuple[str, set[str], str]:
    found = run(["rpm", "-qp", "--nosignature", "--nodigest", "--qf",
                 r"%{NAME}\n%{EPOCHNUM}\n%{VERSION}\n%{RELEASE}\n%{ARCH}\n%{SOURCEPACKAGE}\n",
                 str(path)], what=f"rpm -qp {path.name}", progress=progress, ok=range(0, 256))
    lines = found.stdout.splitlines()
    if found.returncode != 0 or len(lines) < 6:
        raise ProvenanceError(f"{path.name} is not a readable .rpm package: "
                              f"{found.stderr.strip()}")
    name, epoch, version, release, arch, source = lines[:6]
    if source not in ("", "(none)", "0"):
        arch = "src"
    versions = {f"{version}-{release}", f"{epoch}:{version}-{release}", version}
    return name, versions, arch


def check_package_fields(path: Path, entry: ManifestPackage, progress: Progress | None) -> None:
    """The package's own metadata says what the manifest says."""
    if entry.format == PackageFormat.DEB:
        name, version, arch = _deb_fields(path, progress)
        versions = {version}
    elif entry.format == PackageFormat.RPM:
        name, versions, arch = _rpm_fields(path, progress)
    else:
        return
    if name != entry.name or entry.version not in versions or arch != entry.arch:
        raise ProvenanceError(
            f"{entry.file}: the package is {name} {sorted(versions)[0]} ({arch}) but the "
            f"manifest says {entry.name} {entry.version} ({entry.arch}); refusing a manifest "
            "that does not describe its files")


def _resolve(files_dir: Path, entry: ManifestPackage) -> Path:
    if not is_plain_relative(entry.file):
        raise ProvenanceError(f"manifest entry {entry.file!r} is not a relative path inside "
                              f"{files_dir}")
    path = files_dir / entry.file
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(Path(os.path.realpath(files_dir))):
        raise ProvenanceError(f"manifest entry {entry.file} points outside {files_dir}")
    if not real.is_file():
        raise ProvenanceError(f"manifest lists {entry.file} but {path} does not exist "
                              "(incomplete build output?)")
    return path


def _compare(entry: ManifestPackage, sha: str, size: int) -> None:
    if size != entry.size or sha != entry.sha256.lower():
        raise ProvenanceError(
            f"{entry.file} differs from the build manifest: size {size}, sha256 {sha}; the "
            f"manifest says size {entry.size}, sha256 {entry.sha256}. The file was changed "
            "after the build (or the manifest belongs to another build): refusing to publish it")


def stage_inputs(manifest: BuildManifest, files_dir: Path, package_format: PackageFormat,
                 incoming: Path, progress: Progress | None = None) -> list[StagedPackage]:
    """Check every manifest entry and every package file in `files_dir`; copy the packages of
    `package_format` into `incoming` and check the copies. ProvenanceError, with `incoming`
    removed, on anything that does not match."""
    beat = Heartbeat(progress)
    if not files_dir.is_dir():
        raise InvalidInput(f"package directory {files_dir} does not exist")
    listed: dict[str, ManifestPackage] = {}
    for entry in manifest.packages:
        if entry.file in listed:
            raise ProvenanceError(f"the manifest lists {entry.file} twice")
        listed[entry.file] = entry
    resolved = [_resolve(files_dir, entry) for entry in manifest.packages]
    for found in sorted(files_dir.rglob("*")):
        if found.name.endswith(PACKAGE_SUFFIXES) and (found.is_file() or found.is_symlink()):
            rel = found.relative_to(files_dir).as_posix()
            if rel not in listed:
                raise ProvenanceError(f"{found} is not in the build manifest: every package "
                                      "file next to the manifest must be one lockmaster built "
                                      "and listed; remove it or rebuild")
    incoming.mkdir(parents=True, exist_ok=True)
    staged: list[StagedPackage] = []
    try:
        for number, (entry, path) in enumerate(zip(manifest.packages, resolved, strict=True)):
            if entry.format != package_format:
                sha, size = sha256_file(path, beat)
                _compare(entry, sha, size)
                continue
            copy = incoming / f"{number:05d}" / path.name
            copy.parent.mkdir()
            shutil.copyfile(path, copy)
            sha, size = sha256_file(copy, beat)
            _compare(entry, sha, size)
            check_package_fields(copy, entry, beat.raw)
            staged.append(StagedPackage(entry, copy, manifest.source_commit or ""))
            beat.tick(f"checked {len(staged)} input packages")
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    return staged
