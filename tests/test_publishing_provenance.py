"""Provenance: the stable repository only takes packages lockmaster built from merged commits.
Every refusal leaves the repository exactly as it was (and nothing behind). Real git."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lockmaster.publishing import (
    AptRepoConfig,
    InvalidInput,
    ProvenanceError,
    PublishRequest,
    RepoLayout,
    RpmRepoConfig,
    SigningKey,
    publish_apt,
    publish_rpm,
)
from tests.publishing_helpers import (
    GIT_ENV,
    PACKAGES,
    GitRepo,
    build_dir,
    make_git_repo,
    tree_state,
)


@pytest.fixture
def git(tmp_path: Path) -> GitRepo:
    return make_git_repo(tmp_path / "git")


@pytest.fixture
def repo(tmp_path: Path, key: SigningKey, git: GitRepo) -> AptRepoConfig:
    """A repository that already serves one snapshot."""
    config = AptRepoConfig(root=tmp_path / "deb", codename="bookworm", apt_get_check=False)
    manifest = build_dir(tmp_path, "first", [PACKAGES.deb("base", "1.0")], git.merged)
    publish_apt(config, key, PublishRequest(snapshot_id="s1", manifest=manifest,
                                            git_repo=git.path, branch="main"))
    return config


def attempt(repo: AptRepoConfig | RpmRepoConfig, key: SigningKey, manifest: Path,
            git: GitRepo, branch: str = "main") -> None:
    request = PublishRequest(snapshot_id="s2", manifest=manifest, git_repo=git.path,
                             branch=branch)
    if isinstance(repo, AptRepoConfig):
        publish_apt(repo, key, request)
    else:
        publish_rpm(repo, key, request)


def refused(repo: AptRepoConfig, key: SigningKey, manifest: Path, git: GitRepo,
            match: str, error: type[Exception] = ProvenanceError, branch: str = "main") -> None:
    before = tree_state(repo.root)
    with pytest.raises(error, match=match) as caught:
        attempt(repo, key, manifest, git, branch)
    assert tree_state(repo.root) == before, "a refused publish changes nothing"
    assert not getattr(caught.value, "retryable", True)


def edit_manifest(manifest: Path, **changes: object) -> None:
    data = json.loads(manifest.read_text())
    for field, value in changes.items():
        if field.startswith("pkg_"):
            data["packages"][0][field[4:]] = value
        elif value is None:
            data.pop(field, None)
        else:
            data[field] = value
    manifest.write_text(json.dumps(data))


def test_accepted_with_extra_keys(tmp_path: Path, repo: AptRepoConfig, key: SigningKey,
                                  git: GitRepo) -> None:
    manifest = build_dir(tmp_path, "b", [PACKAGES.deb("hello", "1.0")], git.merged,
                         builder_host="build-7", job={"id": 42})
    attempt(repo, key, manifest, git)
    record = RepoLayout(repo.root).record("s2")
    assert record is not None
    hello = next(p for p in record.packages if p.name == "hello")
    assert hello.source_commit == git.merged and hello.published_in == "s2"


def test_file_changed_after_the_build(tmp_path: Path, repo: AptRepoConfig, key: SigningKey,
                                      git: GitRepo) -> None:
    manifest = build_dir(tmp_path, "b", [PACKAGES.deb("hello", "1.0")], git.merged)
    deb = manifest.parent / "deb/hello_1.0_all.deb"
    # A payload of hex digests compresses poorly, so the replacement is surely larger (a short
    # one was sometimes compressed to the very size of the original).
    payload = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(64))
    original_size = deb.stat().st_size
    shutil.copyfile(PACKAGES.deb("hello", "1.0", payload=payload), deb)
    assert deb.stat().st_size != original_size
    refused(repo, key, manifest, git, "differs from the build manifest")
    edit_manifest(manifest, pkg_sha256=hashlib.sha256(deb.read_bytes()).hexdigest())
    refused(repo, key, manifest, git, "size")  # the size still says the old file


def test_same_size_other_bytes(tmp_path: Path, repo: AptRepoConfig, key: SigningKey,
                               git: GitRepo) -> None:
    manifest = build_dir(tmp_path, "b", [PACKAGES.deb("hello", "1.0")], git.merged)
    deb = manifest.parent / "deb/hello_1.0_all.deb"
    data = bytearray(deb.read_bytes())
    data[-1] ^= 0xFF
    deb.write_bytes(bytes(data))
    refused(repo, key, manifest, git, "sha256")


def test_file_not_in_the_manifest(tmp_path: Path, repo: AptRepoConfig, key: SigningKey,
                                  git: GitRepo) -> None:
    manifest = build_dir(tmp_path, "b", [PACKAGES.deb("hello", "1.0")], git.merged)
    shutil.copyfile(PACKAGES.deb("stowaway", "6.6"), manifest.parent / "deb/stowaway.deb")
    refused(repo, key, manifest, git, "stowaway.deb is not in the build manifest")


def test_listed_file_missing_or_outside(tmp_path: Path, repo: AptRepoConfig, key: SigningKey,
                                        git: GitRepo) -> None:
    manifest = build_dir(tmp_path, "b", [PACKAGES.deb("hello", "1.0")], git.merged)
    edit_manifest(manifest, pkg_file="../first/deb/base_1.0_all.deb")
    refused(repo, key, manifest, git, "not a relative path inside")
    (manifest.parent / "deb/hello_1.0_all.deb").unlink()
    edit_manifest(manifest, pkg_file="deb/hello_1.0_all.deb")
    refused(repo, key, manifest, git, "does not exist")


def test_manifest_lies_about_the_package(tmp_path: Path, repo: AptRepoConfig, key: SigningKey,
                                         git: GitRepo) -> None:
    manifest = build_dir(tmp_path, "b", [PACKAGES.deb("hello", "1.0")], git.merged)
    edit_manifest(manifest, pkg_name="openssl")
    refused(repo, key, manifest, git, "manifest says openssl")


def test_no_source_commit(tmp_path: Path, repo: AptRepoConfig, key: SigningKey,
                          git: GitRepo) -> None:
    manifest = build_dir(tmp_path, "b", [PACKAGES.deb("hello", "1.0")], None)
    refused(repo, key, manifest, git, "no source_commit")
    edit_manifest(manifest, source_commit="main")  # a ref is not a built commit
    refused(repo, key, manifest, git, "not a full commit id")


def test_commit_not_merged_then_merged(tmp_path: Path, repo: AptRepoConfig, key: SigningKey,
                                       git: GitRepo) -> None:
    manifest = build_dir(tmp_path, "b", [PACKAGES.deb("hello", "1.0")], git.unmerged)
    refused(repo, key, manifest, git, "is not merged")
    refused(repo, key, manifest, git, "does not exist", branch="stable")
    unknown = build_dir(tmp_path, "c", [PACKAGES.deb("hello", "1.0")], "ab" * 20)
    refused(repo, key, unknown, git, "is not a commit of")
    # the same commit is accepted once the review branch is merged into main
    subprocess.run(["git", "-C", str(git.path), "merge", "-q", "--ff-only", "review"],
                   check=True, env={**GIT_ENV, "PATH": "/usr/bin:/bin"})
    attempt(repo, key, manifest, git)
    assert RepoLayout(repo.root).current_id() == "s2"


def test_bad_manifest_and_nothing_to_publish(tmp_path: Path, repo: AptRepoConfig,
                                             key: SigningKey, git: GitRepo) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    refused(repo, key, broken, git, "not readable JSON", error=InvalidInput)
    rpm_only = build_dir(tmp_path, "b", [PACKAGES.rpm("hello", "1.0")], git.merged)
    refused(repo, key, rpm_only, git, "lists no deb packages", error=InvalidInput)


def test_rpm_repository_refuses_too(tmp_path: Path, key: SigningKey, git: GitRepo) -> None:
    repo = RpmRepoConfig(root=tmp_path / "rpm")
    manifest = build_dir(tmp_path, "b", [PACKAGES.rpm("hello", "1.0")], git.unmerged)
    with pytest.raises(ProvenanceError, match="is not merged"):
        attempt(repo, key, manifest, git)
    assert RepoLayout(repo.root).current_id() is None
    assert not any((repo.root / "snapshots").iterdir())
    edit_manifest(manifest, source_commit=git.merged, pkg_version="9.9-1")
    with pytest.raises(ProvenanceError, match=r"manifest says hello 9\.9-1"):
        attempt(repo, key, manifest, git)
    edit_manifest(manifest, pkg_version="1.0-1")
    attempt(repo, key, manifest, git)
    assert RepoLayout(repo.root).current_id() == "s2"
