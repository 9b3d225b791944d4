"""The stable repositories: publish DEB and RPM into snapshots, signed, verified by the real
client tools, switched atomically; idempotent reruns, crashes at every step, conflicts, tampered
trees, pruning. Real reprepro, createrepo_c, gpg, gpgv, rpmsign, rpmkeys and apt-get."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lockmaster.publishing import (
    AptRepoConfig,
    ConflictError,
    PublishError,
    PublishRequest,
    RepoLayout,
    RpmRepoConfig,
    SigningKey,
    SnapshotInfo,
    VerificationError,
    prune_snapshots,
    publish,
    publish_apt,
    publish_rpm,
    read_apt_repository,
    read_rpm_repository,
)
from lockmaster.publishing.readers import DirectorySource, scan_apt
from lockmaster.publishing.signing import open_keyring, rpm_checksig
from lockmaster.publishing.verify import apt_get_check, verify_apt_tree, verify_rpm_tree
from tests.publishing_helpers import (
    PACKAGES,
    GitRepo,
    build_dir,
    make_git_repo,
    make_signing_key,
    serve_current,
    stop_gpg_agent,
    tree_state,
)

CODENAME = "bookworm"


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningKey]:
    found = make_signing_key(tmp_path_factory.mktemp("other-key"), "Intruder <x@example.invalid>")
    yield found
    stop_gpg_agent(found)


@pytest.fixture
def git(tmp_path: Path) -> GitRepo:
    return make_git_repo(tmp_path / "git")


def apt_repo(tmp_path: Path) -> AptRepoConfig:
    return AptRepoConfig(root=tmp_path / "deb", codename=CODENAME)


def rpm_repo(tmp_path: Path) -> RpmRepoConfig:
    return RpmRepoConfig(root=tmp_path / "rpm")


def req(manifest: Path, snapshot_id: str, git: GitRepo) -> PublishRequest:
    return PublishRequest(snapshot_id=snapshot_id, manifest=manifest, git_repo=git.path,
                          branch="main")


def crash_at(step: str) -> Callable[[str], None]:
    def progress(message: str) -> None:
        if message.split(": ", 1)[-1].startswith(f"{step} done"):
            raise RuntimeError(f"injected crash after {step}")
    return progress


def dearmored(key: SigningKey, directory: Path) -> Path:
    home = directory / "dearmor-home"
    home.mkdir(mode=0o700, exist_ok=True)
    target = directory / "key.gpg"
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes", "--dearmor", "--output",
                    str(target), str(key.public_key)], check=True, capture_output=True)
    return target


def copy_tree(source: Path, target: Path) -> Path:
    """A private copy (hardlinks broken) that a test may tamper with."""
    shutil.copytree(source, target, symlinks=True)
    return target


# --- DEB ----------------------------------------------------------------------------------


def test_publish_deb_signed_and_verified_by_client_tools(tmp_path: Path, key: SigningKey,
                                                         git: GitRepo) -> None:
    repo = apt_repo(tmp_path)
    manifest = build_dir(tmp_path, "b1", [PACKAGES.deb("hello", "1.0"),
                                          PACKAGES.deb("tool", "0.1", arch="amd64")], git.merged)
    messages: list[str] = []
    info = publish_apt(repo, key, req(manifest, "s1", git), progress=messages.append)

    assert info.snapshot_id == "s1" and info.parent is None
    assert info.added == ["pool/main/h/hello/hello_1.0_all.deb",
                          "pool/main/t/tool/tool_0.1_amd64.deb"]
    assert info.source_commit == git.merged
    assert any("apt-get update" in check for check in info.checks)
    assert [m.split(": ", 1)[1].split(" ")[0] for m in messages if " done" in m] == [
        "inputs", "clone", "build", "sign", "verify", "stored", "switch", "prune"]
    live = repo.root / "current"
    assert os.readlink(live) == "snapshots/s1"
    dist = live / "dists" / CODENAME
    release = (dist / "Release").read_text()
    assert "Acquire-By-Hash: yes" in release

    # gpgv, with only the published key, as a client would
    keyring = dearmored(key, tmp_path)
    for args in (["InRelease"], ["Release.gpg", "Release"]):
        subprocess.run(["gpgv", "--homedir", str(tmp_path / "dearmor-home"), "--keyring",
                        str(keyring), *[str(dist / a) for a in args]], check=True,
                       capture_output=True)
    # a real apt-get update + download over HTTP, trusting only the key
    with serve_current(repo.root) as url:
        apt_get_check(url, key.public_key, CODENAME, architectures=["amd64"],
                      download=[("hello", "1.0", "all"), ("tool", "0.1", "amd64")])
        read = read_apt_repository(url, key.public_key, CODENAME)
    assert read.problems == []
    assert read.packages == info.added

    record = RepoLayout(repo.root).record("s1")
    assert record is not None
    assert {p.source_commit for p in record.packages} == {git.merged}
    assert not any((repo.root / "snapshots/s1").glob("conf")), "reprepro state is private"


def test_second_publish_builds_beside_and_hardlinks_unchanged(tmp_path: Path, key: SigningKey,
                                                              git: GitRepo) -> None:
    repo = apt_repo(tmp_path)
    first = build_dir(tmp_path, "b1", [PACKAGES.deb("hello", "1.0"),
                                       PACKAGES.deb("other", "1.0")], git.merged)
    publish_apt(repo, key, req(first, "s1", git))
    second = build_dir(tmp_path, "b2", [PACKAGES.deb("hello", "2.0")], git.merged)
    info = publish_apt(repo, key, req(second, "s2", git))

    assert info.parent == "s1"
    assert info.added == ["pool/main/h/hello/hello_2.0_all.deb"]
    assert info.removed == ["pool/main/h/hello/hello_1.0_all.deb"]
    assert info.package_count == 2
    s1, s2 = repo.root / "snapshots/s1", repo.root / "snapshots/s2"
    unchanged = "pool/main/o/other/other_1.0_all.deb"
    assert (s1 / unchanged).stat().st_ino == (s2 / unchanged).stat().st_ino, "hardlinked"
    # the replaced file stays one generation, unreferenced, for clients mid-read
    assert (s2 / "pool/main/h/hello/hello_1.0_all.deb").exists()
    # the old snapshot is untouched and still valid
    verify_apt_tree(s1, key.public_key, repo)
    # the previous Release's indices stay reachable by hash in the new snapshot
    with open_keyring(key.public_key) as keyring:
        old = scan_apt(DirectorySource(s2), keyring, CODENAME)
    assert old.problems == []
    old_release = (s1 / "dists" / CODENAME / "Release").read_text()
    old_hash = next(line.split()[0] for line in old_release.split("SHA256:")[1].splitlines()
                    if line.strip().endswith("binary-amd64/Packages"))
    assert (s2 / f"dists/{CODENAME}/main/binary-amd64/by-hash/SHA256/{old_hash}").exists()

    third = build_dir(tmp_path, "b3", [PACKAGES.deb("third", "1.0")], git.merged)
    publish_apt(repo, key, req(third, "s3", git))
    s3 = repo.root / "snapshots/s3"
    assert not (s3 / "pool/main/h/hello/hello_1.0_all.deb").exists(), "kept one generation only"
    assert not (s3 / f"dists/{CODENAME}/main/binary-amd64/by-hash/SHA256/{old_hash}").exists()


def test_rerun_is_a_noop_returning_the_same_result(tmp_path: Path, key: SigningKey,
                                                   git: GitRepo) -> None:
    repo = apt_repo(tmp_path)
    manifest = build_dir(tmp_path, "b1", [PACKAGES.deb("hello", "1.0")], git.merged)
    first = publish_apt(repo, key, req(manifest, "s1", git))
    before = tree_state(repo.root)
    messages: list[str] = []
    again = publish_apt(repo, key, req(manifest, "s1", git), progress=messages.append)
    assert again == first
    assert tree_state(repo.root) == before
    assert any("already published" in m for m in messages)

    # a later publish does not make the old id publishable again with other content
    other = build_dir(tmp_path, "b2", [PACKAGES.deb("other", "1.0")], git.merged)
    publish_apt(repo, key, req(other, "s2", git))
    assert publish_apt(repo, key, req(manifest, "s1", git)) == first
    with pytest.raises(ConflictError, match="already published with other packages"):
        publish_apt(repo, key, req(other, "s1", git))


@pytest.mark.parametrize("step", ["inputs", "clone", "build", "sign", "verify", "stored"])
def test_crash_at_any_step_then_rerun_completes(tmp_path: Path, key: SigningKey, git: GitRepo,
                                                step: str) -> None:
    repo = apt_repo(tmp_path)
    publish_apt(repo, key, req(build_dir(tmp_path, "b1", [PACKAGES.deb("hello", "1.0")],
                                         git.merged), "s1", git))
    manifest = build_dir(tmp_path, "b2", [PACKAGES.deb("hello", "2.0")], git.merged)
    with pytest.raises(RuntimeError, match="injected"):
        publish_apt(repo, key, req(manifest, "s2", git), progress=crash_at(step))
    # still serving s1, complete and valid
    assert os.readlink(repo.root / "current") == "snapshots/s1"
    verify_apt_tree(repo.root / "current", key.public_key, repo)

    info = publish_apt(repo, key, req(manifest, "s2", git))
    assert info.parent == "s1" and info.added == ["pool/main/h/hello/hello_2.0_all.deb"]
    assert os.readlink(repo.root / "current") == "snapshots/s2"
    layout = RepoLayout(repo.root)
    assert sorted(p.name for p in layout.snapshots.iterdir()) == ["s1", "s2"]
    assert list(layout.staging.iterdir()) == [] and list(layout.incoming.iterdir()) == []
    assert list(layout.trash.iterdir()) == []
    verify_apt_tree(repo.root / "current", key.public_key, repo)
    assert publish_apt(repo, key, req(manifest, "s2", git)) == info


def test_unswitched_snapshot_is_rebuilt_when_another_was_published_meanwhile(
        tmp_path: Path, key: SigningKey, git: GitRepo) -> None:
    repo = apt_repo(tmp_path)
    publish_apt(repo, key, req(build_dir(tmp_path, "b1", [PACKAGES.deb("hello", "1.0")],
                                         git.merged), "s1", git))
    late = build_dir(tmp_path, "b2", [PACKAGES.deb("late", "1.0")], git.merged)
    with pytest.raises(RuntimeError):
        publish_apt(repo, key, req(late, "s2", git), progress=crash_at("stored"))
    assert (repo.root / "snapshots/s2").is_dir()  # complete, never live
    publish_apt(repo, key, req(build_dir(tmp_path, "b3", [PACKAGES.deb("quick", "1.0")],
                                         git.merged), "s3", git))
    info = publish_apt(repo, key, req(late, "s2", git))
    assert info.parent == "s3", "rebuilt on the snapshot that is live now"
    record = RepoLayout(repo.root).record("s2")
    assert record is not None
    assert {p.name for p in record.packages} == {"hello", "late", "quick"}
    assert os.readlink(repo.root / "current") == "snapshots/s2"


def test_published_version_never_changes(tmp_path: Path, key: SigningKey, git: GitRepo) -> None:
    repo = apt_repo(tmp_path)
    publish_apt(repo, key, req(build_dir(tmp_path, "b1", [PACKAGES.deb("hello", "2.0")],
                                         git.merged), "s1", git))
    before = tree_state(repo.root)
    rebuilt = PACKAGES.deb("hello", "2.0", payload="different content")
    with pytest.raises(PublishError, match=r"other content|hello_2.0"):
        publish_apt(repo, key, req(build_dir(tmp_path, "b2", [rebuilt], git.merged), "s2", git))
    older = PACKAGES.deb("hello", "1.0")
    with pytest.raises(ConflictError, match="publish a higher version"):
        publish_apt(repo, key, req(build_dir(tmp_path, "b3", [older], git.merged), "s3", git))
    assert tree_state(repo.root) == before, "nothing changed, nothing left behind"
    assert os.readlink(repo.root / "current") == "snapshots/s1"


def test_concurrent_publishes_are_serialized(tmp_path: Path, key: SigningKey,
                                             git: GitRepo) -> None:
    repo = apt_repo(tmp_path)
    manifests = {name: build_dir(tmp_path, name, [PACKAGES.deb(name, "1.0")], git.merged)
                 for name in ("alpha", "beta")}
    results: dict[str, SnapshotInfo] = {}
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            results[name] = publish_apt(repo, key, req(manifests[name], name, git))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in manifests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    parents = {str(info.parent) for info in results.values()}
    assert parents in ({"None", "alpha"}, {"None", "beta"}), "one built on the other"
    last = RepoLayout(repo.root).record(RepoLayout(repo.root).current_id())
    assert last is not None and {p.name for p in last.packages} == {"alpha", "beta"}


# --- RPM ----------------------------------------------------------------------------------


def test_publish_rpm_signed_and_verified_by_client_tools(tmp_path: Path, key: SigningKey,
                                                         git: GitRepo) -> None:
    repo = rpm_repo(tmp_path)
    built = PACKAGES.rpm("hello", "1.0")
    manifest = build_dir(tmp_path, "b1", [built, PACKAGES.rpm("other", "1.0")], git.merged)
    info = publish(repo, key, req(manifest, "s1", git))
    assert info.added == ["Packages/hello-1.0-1.noarch.rpm", "Packages/other-1.0-1.noarch.rpm"]
    live = repo.root / "current"
    published = live / "Packages/hello-1.0-1.noarch.rpm"
    assert published.read_bytes() != built.read_bytes(), "signed by rpmsign"
    record = RepoLayout(repo.root).record("s1")
    assert record is not None
    entry = next(p for p in record.packages if p.name == "hello")
    assert entry.source_sha256 != entry.sha256

    # rpmkeys with an isolated rpmdb holding only the key
    dbpath = tmp_path / "rpmdb"
    dbpath.mkdir()
    subprocess.run(["rpmkeys", "--dbpath", str(dbpath), "--import", str(key.public_key)],
                   check=True, capture_output=True)
    checked = subprocess.run(["rpmkeys", "--dbpath", str(dbpath), "--checksig", str(published)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "signatures OK" in checked.stdout
    unsigned = subprocess.run(["rpmkeys", "--dbpath", str(dbpath), "--define",
                               "_pkgverify_level all", "--checksig", str(built)],
                              capture_output=True, text=True, check=False)
    assert unsigned.returncode != 0, "the control: the built package is not signed"
    # gpgv on the detached repomd signature
    keyring = dearmored(key, tmp_path)
    subprocess.run(["gpgv", "--homedir", str(tmp_path / "dearmor-home"), "--keyring",
                    str(keyring), str(live / "repodata/repomd.xml.asc"),
                    str(live / "repodata/repomd.xml")], check=True, capture_output=True)
    with serve_current(repo.root) as url:
        read = read_rpm_repository(url, key.public_key)
    assert read.problems == [] and read.packages == info.added

    second = build_dir(tmp_path, "b2", [PACKAGES.rpm("hello", "1.1")], git.merged)
    info2 = publish_rpm(repo, key, req(second, "s2", git))
    assert info2.added == ["Packages/hello-1.1-1.noarch.rpm"] and info2.removed == []
    s1, s2 = repo.root / "snapshots/s1", repo.root / "snapshots/s2"
    rel = "Packages/other-1.0-1.noarch.rpm"
    assert (s1 / rel).stat().st_ino == (s2 / rel).stat().st_ino
    # the previous repomd's files stay for clients that read it just before the switch
    old = [line.split('"')[1] for line in (s1 / "repodata/repomd.xml").read_text().splitlines()
           if "<location" in line]
    assert old and all((s2 / href).exists() for href in old)
    assert publish_rpm(repo, key, req(second, "s2", git)) == info2


def test_rpm_same_file_name_other_content_is_refused(tmp_path: Path, key: SigningKey,
                                                     git: GitRepo) -> None:
    repo = rpm_repo(tmp_path)
    publish_rpm(repo, key, req(build_dir(tmp_path, "b1", [PACKAGES.rpm("hello", "1.0")],
                                         git.merged), "s1", git))
    rebuilt = PACKAGES.rpm("hello", "1.0", payload="other bits")
    with pytest.raises(ConflictError, match="already published with other content"):
        publish_rpm(repo, key, req(build_dir(tmp_path, "b2", [rebuilt], git.merged), "s2", git))
    assert os.readlink(repo.root / "current") == "snapshots/s1"
    assert not (repo.root / "snapshots/s2").exists()


@pytest.mark.parametrize("step", ["build", "verify", "stored"])
def test_rpm_crash_then_rerun(tmp_path: Path, key: SigningKey, git: GitRepo, step: str) -> None:
    repo = rpm_repo(tmp_path)
    publish_rpm(repo, key, req(build_dir(tmp_path, "b1", [PACKAGES.rpm("hello", "1.0")],
                                         git.merged), "s1", git))
    manifest = build_dir(tmp_path, "b2", [PACKAGES.rpm("hello", "1.1")], git.merged)
    with pytest.raises(RuntimeError):
        publish_rpm(repo, key, req(manifest, "s2", git), progress=crash_at(step))
    assert os.readlink(repo.root / "current") == "snapshots/s1"
    verify_rpm_tree(repo.root / "current", key.public_key)
    info = publish_rpm(repo, key, req(manifest, "s2", git))
    assert info.added == ["Packages/hello-1.1-1.noarch.rpm"]
    verify_rpm_tree(repo.root / "current", key.public_key)
    assert sorted(p.name for p in (repo.root / "snapshots").iterdir()) == ["s1", "s2"]


# --- tampering ----------------------------------------------------------------------------


@pytest.fixture
def deb_snapshot(tmp_path: Path, key: SigningKey, git: GitRepo) -> tuple[AptRepoConfig, Path]:
    repo = apt_repo(tmp_path)
    manifest = build_dir(tmp_path, "b1", [PACKAGES.deb("hello", "1.0"),
                                          PACKAGES.deb("other", "1.0")], git.merged)
    publish_apt(repo, key, req(manifest, "s1", git))
    return repo, copy_tree(repo.root / "snapshots/s1", tmp_path / "copy")


@pytest.fixture
def rpm_snapshot(tmp_path: Path, key: SigningKey, git: GitRepo) -> Path:
    repo = rpm_repo(tmp_path)
    manifest = build_dir(tmp_path, "b1", [PACKAGES.rpm("hello", "1.0")], git.merged)
    publish_rpm(repo, key, req(manifest, "s1", git))
    return copy_tree(repo.root / "snapshots/s1", tmp_path / "copy")


@contextlib.contextmanager
def _serve(tree: Path) -> Iterator[str]:
    root = tree.parent / "served"
    (root / "snapshots").mkdir(parents=True)
    (root / "snapshots" / "x").symlink_to(tree)
    (root / "current").symlink_to("snapshots/x")
    with serve_current(root) as url:
        yield url


def test_untampered_copy_verifies(deb_snapshot: tuple[AptRepoConfig, Path],
                                  key: SigningKey) -> None:
    repo, tree = deb_snapshot
    assert verify_apt_tree(tree, key.public_key, repo)


def test_edited_packages_index_fails(deb_snapshot: tuple[AptRepoConfig, Path],
                                     key: SigningKey) -> None:
    repo, tree = deb_snapshot
    index = tree / f"dists/{CODENAME}/main/binary-amd64/Packages"
    original = index.read_bytes()
    edited = original.replace(b"Priority: optional", b"Priority: required")
    index.write_bytes(edited)
    with pytest.raises(VerificationError, match="binary-amd64/Packages: sha256"):
        verify_apt_tree(tree, key.public_key, repo)
    # apt (and the reader) fetch the by-hash copy: in a published tree it is a hardlink of
    # the named file, so an in-place edit changes both; here, after copytree, edit it too
    by_hash = index.parent / "by-hash/SHA256" / hashlib.sha256(original).hexdigest()
    by_hash.write_bytes(edited)
    with _serve(tree) as url:
        problems = read_apt_repository(url, key.public_key, CODENAME).problems
    assert any("by-hash/SHA256" in p and ": sha256 " in p for p in problems)
    assert all("by-hash/SHA256" in p for p in problems)


def test_replaced_deb_fails(deb_snapshot: tuple[AptRepoConfig, Path], key: SigningKey) -> None:
    repo, tree = deb_snapshot
    target = tree / "pool/main/h/hello/hello_1.0_all.deb"
    shutil.copyfile(PACKAGES.deb("hello", "1.0", payload="trojan"), target)
    with pytest.raises(VerificationError, match=r"hello_1.0_all.deb: (size|sha256)"):
        verify_apt_tree(tree, key.public_key, repo)
    with _serve(tree) as url:
        problems = read_apt_repository(url, key.public_key, CODENAME).problems
    assert problems and all("hello_1.0_all.deb" in p for p in problems)


def test_missing_deb_and_foreign_signature_fail(deb_snapshot: tuple[AptRepoConfig, Path],
                                                key: SigningKey, other_key: SigningKey) -> None:
    repo, tree = deb_snapshot
    with pytest.raises(VerificationError, match="signature check failed"):
        verify_apt_tree(tree, other_key.public_key, repo)
    with pytest.raises(VerificationError, match="apt-get update"):
        apt_get_check(tree.as_uri(), other_key.public_key, CODENAME)
    (tree / "pool/main/o/other/other_1.0_all.deb").unlink()
    with pytest.raises(VerificationError, match=r"other_1.0_all.deb: missing"):
        verify_apt_tree(tree, key.public_key, repo)


def test_apt_get_sees_a_tampered_index(deb_snapshot: tuple[AptRepoConfig, Path],
                                       key: SigningKey) -> None:
    _, tree = deb_snapshot
    apt_get_check(tree.as_uri(), key.public_key, CODENAME)  # the control
    for index in (tree / f"dists/{CODENAME}/main/binary-amd64").rglob("*"):
        if index.is_file():  # Packages, Packages.gz and their by-hash copies
            index.write_bytes(index.read_bytes() + b"\n")
    with pytest.raises(VerificationError, match="apt-get update"):
        apt_get_check(tree.as_uri(), key.public_key, CODENAME)


def test_flipped_byte_in_repomd_fails(rpm_snapshot: Path, key: SigningKey) -> None:
    tree = rpm_snapshot
    verify_rpm_tree(tree, key.public_key)  # the control
    repomd = tree / "repodata/repomd.xml"
    data = bytearray(repomd.read_bytes())
    at = data.index(b"<revision>") + len(b"<revision>")
    data[at] = ord("9") if data[at] != ord("9") else ord("8")
    repomd.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=r"repomd.xml.asc: signature check failed"):
        verify_rpm_tree(tree, key.public_key)
    with _serve(tree) as url:
        problems = read_rpm_repository(url, key.public_key).problems
    assert len(problems) == 1 and "signature check failed" in problems[0]


def test_replaced_or_unsigned_rpm_fails(rpm_snapshot: Path, key: SigningKey) -> None:
    tree = rpm_snapshot
    target = tree / "Packages/hello-1.0-1.noarch.rpm"
    unsigned = PACKAGES.rpm("hello", "1.0")
    with open_keyring(key.public_key) as keyring:
        assert rpm_checksig(keyring, [target]) == []
        problems = rpm_checksig(keyring, [unsigned])
    assert problems and "signature check failed" in problems[0]
    shutil.copyfile(unsigned, target)
    with pytest.raises(VerificationError, match=r"hello-1.0-1.noarch.rpm: (size|sha256)"):
        verify_rpm_tree(tree, key.public_key)


# --- pruning ------------------------------------------------------------------------------


def test_old_snapshots_pruned_after_grace_period(tmp_path: Path, key: SigningKey,
                                                 git: GitRepo) -> None:
    repo = rpm_repo(tmp_path).model_copy(update={"grace_seconds": 3600})
    for n in range(1, 5):
        manifest = build_dir(tmp_path, f"b{n}", [PACKAGES.rpm(f"p{n}", "1.0")], git.merged)
        publish_rpm(repo, key, req(manifest, f"s{n}", git))
    snapshots = repo.root / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["s1", "s2", "s3", "s4"]
    assert prune_snapshots(repo.root, 3600) == []
    assert prune_snapshots(repo.root, 3600, now=time.time() + 7200) == ["s1", "s2"]
    assert sorted(p.name for p in snapshots.iterdir()) == ["s3", "s4"], "current + previous"
    assert prune_snapshots(repo.root, 0, now=time.time() + 7200) == []
    verify_rpm_tree(repo.root / "current", key.public_key)
    # the publish itself prunes too, with the repository's grace period
    manifest = build_dir(tmp_path, "b5", [PACKAGES.rpm("p5", "1.0")], git.merged)
    publish_rpm(repo, key, req(manifest, "s5", git), now=time.time() + 7200)
    assert sorted(p.name for p in snapshots.iterdir()) == ["s4", "s5"]
