"""Mirror sync: directory mirrors and rsync over SSH (a real sshd), read over HTTP during the
sync by the consistency reader, killed mid-way and resumed, down and back, pruned after grace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockmaster.publishing import (
    AptRepoConfig,
    DirectoryMirror,
    HostKeyMismatch,
    InvalidInput,
    MirrorUnavailable,
    PublishError,
    PublishRequest,
    RepoLayout,
    RpmRepoConfig,
    RsyncSSHMirror,
    SigningKey,
    SyncReport,
    prune_mirror,
    publish_apt,
    publish_rpm,
    read_apt_repository,
    read_rpm_repository,
    sync_mirror,
)
from lockmaster.publishing.readers import HTTPSource, RepositoryRead
from lockmaster.publishing.verify import apt_get_check
from tests.fixtures.sshd import SSHServer
from tests.ports import free_port
from tests.publishing_helpers import (
    PACKAGES,
    build_dir,
    make_git_repo,
    make_signing_key,
    serve_current,
    stop_gpg_agent,
    tree_state,
)

CODENAME = "bookworm"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Source:
    """A publishing host's repository with snapshots s1..s4 (never modified by the tests)."""

    format: str
    root: Path
    key: SigningKey

    def packages(self, snapshot_id: str) -> list[str]:
        record = RepoLayout(self.root).record(snapshot_id)
        assert record is not None
        return [p.path for p in record.packages]

    def read(self, url: str, source: HTTPSource | None = None) -> RepositoryRead:
        if self.format == "deb":
            return read_apt_repository(url, self.key.public_key, CODENAME, source=source)
        return read_rpm_repository(url, self.key.public_key, source=source)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Source]]:
    base = tmp_path_factory.mktemp("publishing-host")
    key = make_signing_key(base / "key")
    git = make_git_repo(base / "git")
    contents = {
        "deb": [[PACKAGES.deb("hello", "1.0"), PACKAGES.deb("other", "1.0")],
                [PACKAGES.deb("hello", "2.0"), PACKAGES.deb("fresh", "1.0")],
                [PACKAGES.deb("extra", "1.0")], [PACKAGES.deb("more", "1.0")]],
        "rpm": [[PACKAGES.rpm("hello", "1.0"), PACKAGES.rpm("other", "1.0")],
                [PACKAGES.rpm("hello", "1.1"), PACKAGES.rpm("fresh", "1.0")],
                [PACKAGES.rpm("extra", "1.0")], [PACKAGES.rpm("more", "1.0")]],
    }
    found: dict[str, Source] = {}
    for fmt, batches in contents.items():
        root = base / fmt
        for number, batch in enumerate(batches, 1):
            manifest = build_dir(base / f"{fmt}-builds", f"b{number}", batch, git.merged)
            request = PublishRequest(snapshot_id=f"s{number}", manifest=manifest,
                                     git_repo=git.path, branch="main")
            if fmt == "deb":
                publish_apt(AptRepoConfig(root=root, codename=CODENAME), key, request)
            else:
                publish_rpm(RpmRepoConfig(root=root), key, request)
        found[fmt] = Source(fmt, root, key)
    yield found
    stop_gpg_agent(key)


def mirror_at(tmp_path: Path, name: str = "m1") -> DirectoryMirror:
    return DirectoryMirror(name=name, path=tmp_path / name)


def assert_complete(mirror: Path, source: Source, current: str, snapshots: set[str]) -> None:
    """The mirror serves `current`, holds exactly `snapshots`, no leftovers, no duplicates."""
    assert os.readlink(mirror / "current") == f"snapshots/{current}"
    dirs = {p.name for p in (mirror / "snapshots").iterdir() if p.is_dir()}
    reports = {p.name.removesuffix(".sync.json") for p in (mirror / "snapshots").glob("*.json")}
    assert dirs == snapshots and reports == snapshots
    assert list((mirror / "incoming").iterdir()) == []
    assert [p for p in (mirror / "trash").iterdir()] == []
    assert not list(mirror.glob(".current.*"))
    assert not (mirror / "snapshots" / current / ".lockmaster").exists(), "private state"
    with serve_current(mirror) as url:
        read = source.read(url)
    assert read.problems == []
    assert read.packages == source.packages(current)


@pytest.mark.parametrize("fmt", ["deb", "rpm"])
def test_directory_sync_rerun_and_hardlinks(tmp_path: Path, sources: dict[str, Source],
                                            fmt: str) -> None:
    source = sources[fmt]
    mirror = mirror_at(tmp_path)
    first = sync_mirror(source.root, "s1", mirror)
    assert first.outcome == "synced" and first.previous_snapshot is None
    assert first.added == source.packages("s1") and first.removed == []
    second = sync_mirror(source.root, "s2", mirror)
    assert second.previous_snapshot == "s1"
    assert set(second.added) == set(source.packages("s2")) - set(source.packages("s1"))
    assert set(second.removed) == set(source.packages("s1")) - set(source.packages("s2"))
    assert ("fresh" in " ".join(second.added) and
            (fmt == "rpm" or second.removed == ["pool/main/h/hello/hello_1.0_all.deb"]))
    assert 0 < second.bytes_sent < first.bytes_sent + 20_000
    assert_complete(mirror.path, source, "s2", {"s1", "s2"})

    unchanged = next(p for p in source.packages("s1") if "other" in p)
    a, b = (mirror.path / "snapshots" / s / unchanged for s in ("s1", "s2"))
    assert a.stat().st_ino == b.stat().st_ino, "unchanged package hardlinked, not copied"
    stored = json.loads((mirror.path / "snapshots/s2.sync.json").read_text())
    assert SyncReport.model_validate(stored["report"]) == second
    assert stored["packages"] == source.packages("s2")

    before = tree_state(mirror.path)
    assert sync_mirror(source.root, "s2", mirror) == second, "a rerun returns the same report"
    assert tree_state(mirror.path) == before
    if fmt == "deb":
        with serve_current(mirror.path) as url:
            apt_get_check(url, source.key.public_key, CODENAME,
                          download=[("hello", "2.0", "all"), ("fresh", "1.0", "all")])


def test_older_snapshot_never_replaces_a_newer_one(tmp_path: Path,
                                                   sources: dict[str, Source]) -> None:
    source = sources["deb"]
    mirror = mirror_at(tmp_path)
    sync_mirror(source.root, "s3", mirror)
    before = tree_state(mirror.path)
    late = sync_mirror(source.root, "s1", mirror)
    assert late.outcome == "superseded" and late.previous_snapshot == "s3"
    assert tree_state(mirror.path) == before
    with pytest.raises(InvalidInput, match="not a complete published snapshot"):
        sync_mirror(source.root, "s9", mirror)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["deb", "rpm"])
def test_reader_over_http_during_sync_sees_no_problem(tmp_path: Path,
                                                      sources: dict[str, Source],
                                                      fmt: str) -> None:
    source = sources[fmt]
    mirror = mirror_at(tmp_path)
    sync_mirror(source.root, "s1", mirror)
    reads: list[RepositoryRead] = []
    stop = threading.Event()
    with serve_current(mirror.path) as url:
        def reader() -> None:
            while not stop.is_set():
                reads.append(source.read(url))

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while len(reads) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)

        def slow(message: str) -> None:  # widen every step so reads land inside each one
            if " done" in message:
                time.sleep(0.25)

        report = sync_mirror(source.root, "s2", mirror, progress=slow)
        count = len(reads)
        while len(reads) < count + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join(timeout=30)
    assert report.outcome == "synced"
    assert len(reads) >= 8
    assert [r.problems for r in reads if r.problems] == []
    assert reads[0].packages == source.packages("s1")
    assert reads[-1].packages == source.packages("s2")
    new = next(p for p in source.packages("s2") if "fresh" in p)
    assert new not in reads[0].packages and new in reads[-1].packages


@pytest.mark.parametrize("fmt", ["deb", "rpm"])
def test_a_read_that_spans_the_switch_completes(tmp_path: Path, sources: dict[str, Source],
                                                fmt: str) -> None:
    """A client that read the old top-level metadata just before the switch fetches the rest
    from the new snapshot: by-hash indices, old repodata and replaced packages are there."""
    source = sources[fmt]
    mirror = mirror_at(tmp_path)
    sync_mirror(source.root, "s1", mirror)
    trigger = f"dists/{CODENAME}/InRelease" if fmt == "deb" else "repodata/repomd.xml"
    seen: list[str] = []
    switched: list[SyncReport] = []

    def after_fetch(rel: str) -> None:
        seen.append(rel)
        # deb: right after InRelease; rpm: after repomd.xml, its signature and the re-read
        if not switched and seen.count(trigger) == (1 if fmt == "deb" else 2):
            switched.append(sync_mirror(source.root, "s2", mirror))

    with serve_current(mirror.path) as url:
        read = source.read(url, HTTPSource(url, after_fetch=after_fetch))
    assert switched and os.readlink(mirror.path / "current") == "snapshots/s2"
    assert read.problems == []
    assert read.packages == source.packages("s1"), "the whole read used the old metadata"
    if fmt == "deb":
        assert any("/by-hash/SHA256/" in rel for rel in seen)
        assert "pool/main/h/hello/hello_1.0_all.deb" in seen  # replaced in s2, still there


KILLED_SYNC = """
import sys, time
from pathlib import Path
from lockmaster.publishing import DirectoryMirror, sync_mirror

def progress(message):
    print(message, flush=True)
    if ": files done" in message:
        print("FILES-COPIED", flush=True)
        time.sleep(120)

sync_mirror(Path(sys.argv[1]), sys.argv[2], DirectoryMirror(name="m1", path=Path(sys.argv[3])),
            progress=progress)
print("FINISHED", flush=True)
"""


def test_sync_killed_between_files_and_switch_then_rerun(tmp_path: Path,
                                                         sources: dict[str, Source]) -> None:
    source = sources["deb"]
    mirror = mirror_at(tmp_path)
    sync_mirror(source.root, "s1", mirror)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SYNC, str(source.root), "s2", str(mirror.path)],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    watchdog = threading.Timer(90, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "FILES-COPIED" in line:
                break
        assert lines and "FILES-COPIED" in lines[-1], "".join(lines)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # killed: the package files are in incoming/, the mirror still serves s1, consistently
    assert (mirror.path / "incoming/s2/pool/main/f/fresh/fresh_1.0_all.deb").exists()
    assert os.readlink(mirror.path / "current") == "snapshots/s1"
    with serve_current(mirror.path) as url:
        assert source.read(url).problems == []

    report = sync_mirror(source.root, "s2", mirror)
    assert report.previous_snapshot == "s1"
    assert "pool/main/f/fresh/fresh_1.0_all.deb" in report.added
    assert_complete(mirror.path, source, "s2", {"s1", "s2"})
    assert sync_mirror(source.root, "s2", mirror) == report


@pytest.mark.parametrize("step", ["state", "files", "metadata", "check", "stored", "switch"])
def test_crash_at_each_step_then_rerun(tmp_path: Path, sources: dict[str, Source],
                                       step: str) -> None:
    source = sources["rpm"]
    mirror = mirror_at(tmp_path)
    sync_mirror(source.root, "s1", mirror)

    def crash(message: str) -> None:
        if f": {step} done" in message:
            raise RuntimeError(f"injected crash after {step}")

    with pytest.raises(RuntimeError, match="injected"):
        sync_mirror(source.root, "s2", mirror, progress=crash)
    served = "s2" if step == "switch" else "s1"
    assert os.readlink(mirror.path / "current") == f"snapshots/{served}"
    with serve_current(mirror.path) as url:
        read = source.read(url)
    assert read.problems == [] and read.packages == source.packages(served)
    report = sync_mirror(source.root, "s2", mirror)
    assert report.previous_snapshot == "s1" and report.outcome == "synced"
    assert_complete(mirror.path, source, "s2", {"s1", "s2"})


def test_pruned_after_grace_period_only(tmp_path: Path, sources: dict[str, Source]) -> None:
    source = sources["deb"]
    mirror = mirror_at(tmp_path)
    for snapshot in ("s1", "s2", "s3"):
        sync_mirror(source.root, snapshot, mirror, grace_seconds=3600)
    assert_complete(mirror.path, source, "s3", {"s1", "s2", "s3"})
    assert prune_mirror(mirror, 3600) == []
    assert prune_mirror(mirror, 3600, now=time.time() + 7200) == ["s1"]
    assert_complete(mirror.path, source, "s3", {"s2", "s3"})  # current + previous stay
    sync_mirror(source.root, "s4", mirror, grace_seconds=3600, now=time.time() + 7200)
    assert_complete(mirror.path, source, "s4", {"s3", "s4"})


# --- rsync over SSH --------------------------------------------------------------------------


def ssh_mirror(tmp_path: Path, server: SSHServer, *, port: int | None = None,
               host_key: str | None = None, name: str = "remote") -> RsyncSSHMirror:
    known_hosts = tmp_path / f"known_hosts-{name}"
    known_hosts.write_text(f"[{server.host}]:{server.port} {host_key or server.host_key}\n")
    return RsyncSSHMirror(name=name, host=server.host, port=port or server.port,
                          user=server.user, key_file=server.client_key,
                          known_hosts_file=known_hosts, path=str(tmp_path / name),
                          connect_timeout=5)


@pytest.mark.slow
def test_rsync_ssh_mirror_down_then_back(tmp_path: Path, sources: dict[str, Source],
                                         sshd_server: SSHServer) -> None:
    source = sources["rpm"]
    mirror = ssh_mirror(tmp_path, sshd_server)
    first = sync_mirror(source.root, "s1", mirror)
    assert first.outcome == "synced" and first.added == source.packages("s1")
    remote = Path(mirror.path)
    assert_complete(remote, source, "s1", {"s1"})

    down = mirror.model_copy(update={"port": free_port()})
    with pytest.raises(MirrorUnavailable, match="unreachable") as caught:
        sync_mirror(source.root, "s2", down)
    assert caught.value.retryable and isinstance(caught.value, PublishError)
    assert_complete(remote, source, "s1", {"s1"})  # untouched, still consistent

    messages: list[str] = []
    second = sync_mirror(source.root, "s2", mirror, progress=messages.append)
    assert second.previous_snapshot == "s1"
    assert set(second.added) == set(source.packages("s2")) - set(source.packages("s1"))
    assert_complete(remote, source, "s2", {"s1", "s2"})
    rel = next(p for p in source.packages("s1") if "other" in p)
    assert (remote / "snapshots/s1" / rel).stat().st_ino == \
        (remote / "snapshots/s2" / rel).stat().st_ino, "--link-dest: not sent again"
    assert [m.split(": ")[1].split(" ")[0] for m in messages if " done" in m] == [
        "state", "files", "metadata", "check", "stored", "switch", "prune"]
    assert sync_mirror(source.root, "s2", mirror) == second


@pytest.mark.slow
def test_rsync_ssh_killed_mid_sync_resumes(tmp_path: Path, sources: dict[str, Source],
                                           sshd_server: SSHServer) -> None:
    source = sources["deb"]
    mirror = ssh_mirror(tmp_path, sshd_server)
    sync_mirror(source.root, "s1", mirror)

    def crash(message: str) -> None:
        if ": metadata done" in message:
            raise RuntimeError("injected")

    with pytest.raises(RuntimeError):
        sync_mirror(source.root, "s2", mirror, progress=crash)
    assert os.readlink(Path(mirror.path) / "current") == "snapshots/s1"
    report = sync_mirror(source.root, "s2", mirror)
    assert report.previous_snapshot == "s1"
    assert_complete(Path(mirror.path), source, "s2", {"s1", "s2"})


def test_rsync_ssh_wrong_host_key_is_refused(tmp_path: Path, sources: dict[str, Source],
                                             sshd_server: SSHServer) -> None:
    mirror = ssh_mirror(tmp_path, sshd_server, host_key=sshd_server.other_host_key())
    with pytest.raises(HostKeyMismatch, match="host key") as caught:
        sync_mirror(sources["deb"].root, "s1", mirror)
    assert not caught.value.retryable
    assert not Path(mirror.path).exists()


@pytest.mark.slow
def test_two_mirrors_are_independent(tmp_path: Path, sources: dict[str, Source],
                                     sshd_server: SSHServer) -> None:
    source = sources["deb"]
    local = mirror_at(tmp_path, "local")
    remote = ssh_mirror(tmp_path, sshd_server, port=free_port(), name="far")
    reports: dict[str, SyncReport] = {}
    failures: dict[str, PublishError] = {}
    for mirror in (remote, local):  # the failing one first: the other is not affected
        try:
            reports[mirror.name] = sync_mirror(source.root, "s2", mirror)
        except PublishError as exc:
            failures[mirror.name] = exc
    assert set(failures) == {"far"} and isinstance(failures["far"], MirrorUnavailable)
    assert reports["local"].outcome == "synced" and reports["local"].previous_snapshot is None
    assert_complete(local.path, source, "s2", {"s2"})

    back = ssh_mirror(tmp_path, sshd_server, name="far")
    assert sync_mirror(source.root, "s2", back).outcome == "synced"
    assert_complete(Path(back.path), source, "s2", {"s2"})
    assert sync_mirror(source.root, "s2", local) == reports["local"]

