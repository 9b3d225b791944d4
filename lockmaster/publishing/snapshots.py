"""Snapshot layout, the atomic pointer switch, pruning, and the publish transaction.

On the publishing host, per repository (one for DEB, one for RPM):

    <root>/current -> snapshots/<id>   relative symlink: what HTTP serves; replaced by rename(2)
    <root>/snapshots/<id>/             complete, signed, verified repository trees (immutable)
    <root>/snapshots/<id>/.lockmaster/ private: snapshot.json (SnapshotRecord), tool state
    <root>/staging/<id>/               the next snapshot being built (rebuilt on rerun)
    <root>/incoming/<id>/              checked private copies of the packages to add
    <root>/trash/                      trees being removed
    <root>/.lock                       flock: one publish at a time per repository

A publish builds the new tree beside the live one (unchanged package files hardlinked from the
current snapshot, metadata copied), adds the packages, signs, verifies as a client would,
writes the record, renames staging/<id> to snapshots/<id>, and only then switches `current`
(a new symlink under a temporary name, then os.replace). Everything before the switch is
invisible to clients; a crash anywhere leaves `current` on the old, complete snapshot, and a
rerun with the same snapshot id finishes the job (see `transaction`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from lockmaster.publishing import provenance
from lockmaster.publishing.errors import (
    ConflictError,
    InvalidInput,
    LockTimeout,
    ProvenanceError,
    PublishError,
    os_errors,
)
from lockmaster.publishing.model import (
    BuildManifest,
    ManifestPackage,
    PackageFormat,
    PublishedPackage,
    PublishRequest,
    SigningKey,
    SnapshotInfo,
    SnapshotRecord,
)
from lockmaster.publishing.signing import check_key
from lockmaster.publishing.tools import Heartbeat, Progress, syncfs, write_atomic

PRIVATE = ".lockmaster"
RECORD = f"{PRIVATE}/snapshot.json"
KEY_FILE = "signing-key.asc"
POINTER = "current"
LOCK_TIMEOUT = 3600.0


@dataclass(frozen=True)
class RepoLayout:
    root: Path

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def trash(self) -> Path:
        return self.root / "trash"

    @property
    def current(self) -> Path:
        return self.root / POINTER

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def snapshot(self, snapshot_id: str) -> Path:
        return self.snapshots / snapshot_id

    def ensure(self) -> None:
        for directory in (self.snapshots, self.staging, self.incoming, self.trash):
            directory.mkdir(parents=True, exist_ok=True)

    def current_id(self) -> str | None:
        return read_pointer(self.current)

    def record(self, snapshot_id: str | None) -> SnapshotRecord | None:
        if snapshot_id is None:
            return None
        path = self.snapshot(snapshot_id) / RECORD
        try:
            return SnapshotRecord.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise PublishError(f"snapshot record {path} is unreadable: {exc}; the snapshot "
                               "was not written by this library or was damaged") from exc


def read_pointer(link: Path) -> str | None:
    """The snapshot id `link` (a `current` symlink) points to; None if there is none yet."""
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PublishError(f"{link} is not a symlink ({exc}); the repository root was not made "
                           "by this library: move it away or fix it by hand") from exc
    prefix = "snapshots/"
    if not target.startswith(prefix) or "/" in target[len(prefix):]:
        raise PublishError(f"{link} points to {target!r}, not to snapshots/<id>")
    return target[len(prefix):]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def switch_pointer(root: Path, snapshot_id: str) -> None:
    """Point `<root>/current` at snapshots/<snapshot_id>, atomically: readers see the old
    target or the new one, never no `current`."""
    if not (root / "snapshots" / snapshot_id).is_dir():
        raise PublishError(f"cannot switch {root}/current to missing snapshot {snapshot_id}")
    tmp = root / f".{POINTER}.{uuid.uuid4().hex[:12]}.tmp"
    os.symlink(f"snapshots/{snapshot_id}", tmp)
    try:
        os.replace(tmp, root / POINTER)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(root)


def lineage(layout: RepoLayout, start: str | None, limit: int = 100_000) -> list[str]:
    """`start` and its ancestors (parent, grandparent, ...) as far as records exist."""
    found: list[str] = []
    while start is not None and start not in found and len(found) < limit:
        found.append(start)
        record = layout.record(start)
        start = record.info.parent if record else None
    return found


def plan_prune(created: Mapping[str, float], keep: Collection[str | None], grace: float,
               now: float) -> list[str]:
    """Snapshots to remove: not in `keep`, and replaced more than `grace` seconds ago. A
    snapshot counts as replaced when the next one (by creation time) was created; one that was
    never followed (an abandoned build) counts from its own creation."""
    order = sorted(created, key=lambda s: (created[s], s))
    doomed: list[str] = []
    for index, snapshot in enumerate(order):
        if snapshot in keep:
            continue
        replaced = created[order[index + 1]] if index + 1 < len(order) else created[snapshot]
        if now - replaced >= grace:
            doomed.append(snapshot)
    return doomed


def remove_tree(path: Path, beat: Heartbeat | None = None) -> None:
    """rm -rf with heartbeats (a big snapshot takes a while to delete)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    removed = 0
    for directory, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(directory, d))]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
            removed += 1
            if beat is not None:
                beat.tick(f"removing {path.name}: {removed} files")
        for name in dirnames:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.rmdir(os.path.join(directory, name))
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)


def discard(layout: RepoLayout, path: Path, beat: Heartbeat | None = None) -> None:
    """Remove a tree: first renamed into trash/ (gone at once), then deleted."""
    if not path.exists() and not path.is_symlink():
        return
    layout.trash.mkdir(parents=True, exist_ok=True)
    target = layout.trash / f"{path.name}.{uuid.uuid4().hex[:12]}"
    os.rename(path, target)
    remove_tree(target, beat)


@contextlib.contextmanager
def locked(path: Path, beat: Heartbeat, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """An exclusive flock on `path`, waited for with heartbeats (released if we die)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    started = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited > timeout:
                    raise LockTimeout(f"{path} has been locked by another publish or sync for "
                                      f"{waited:.0f} s; retry later") from None
                beat.tick(f"waiting for {path} (another publish or sync holds it)")
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def clone_tree(source: Path, target: Path, *, link: Callable[[str], bool],
               skip: Callable[[str], bool], beat: Heartbeat) -> tuple[int, int]:
    """Recreate `source` at `target`: files for which `link(rel)` hardlinked (immutable package
    files), the others copied (metadata the tools rewrite), `skip(rel)` ones left out.
    Returns (linked, copied)."""
    linked = copied = 0
    target.mkdir(parents=True)
    for directory, dirnames, filenames in os.walk(source):
        base = Path(directory)
        rel_dir = base.relative_to(source)
        for name in dirnames:
            rel = (rel_dir / name).as_posix()
            if (base / name).is_symlink():
                os.symlink(os.readlink(base / name), target / rel)
            elif not skip(rel):
                (target / rel).mkdir()
        dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()
                       and not skip((rel_dir / d).as_posix())]
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            if skip(rel):
                continue
            src, dst = base / name, target / rel
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
            elif link(rel):
                os.link(src, dst)
                linked += 1
            else:
                shutil.copy2(src, dst)
                copied += 1
            beat.tick(f"cloning: {linked} files linked, {copied} copied")
    return linked, copied


# --- the transaction -------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexedPackage:
    """A package file the built metadata references."""

    path: str
    name: str
    version: str
    arch: str
    sha256: str
    size: int


@dataclass
class Built:
    packages: list[IndexedPackage]
    placed: dict[str, str]  # manifest file -> package path in the snapshot
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BuildContext:
    snapshot_id: str
    staging: Path
    previous: Path | None  # the current snapshot's tree
    previous_record: SnapshotRecord | None
    inputs: list[provenance.StagedPackage]
    key: SigningKey
    beat: Heartbeat

    def trusted(self, rel: str, sha256: str | None) -> bool:
        """A file hardlinked from the previous (verified) snapshot, listed with the same hash
        there: its content was verified when that snapshot was published."""
        if self.previous is None or self.previous_record is None or sha256 is None:
            return False
        known = {p.path: p.sha256 for p in self.previous_record.packages}
        if known.get(rel) != sha256:
            return False
        try:
            a, b = (self.staging / rel).stat(), (self.previous / rel).stat()
        except OSError:
            return False
        return (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


class Builder(Protocol):
    format: PackageFormat

    def link_in_clone(self, rel: str) -> bool: ...

    def skip_in_clone(self, rel: str) -> bool: ...

    def build(self, ctx: BuildContext) -> Built: ...

    def sign(self, ctx: BuildContext) -> None: ...

    def verify(self, ctx: BuildContext, built: Built) -> list[str]: ...


def _same_inputs(record: SnapshotRecord, source_commit: str | None,
                 claims: list[ManifestPackage]) -> bool:
    def key(p: ManifestPackage) -> tuple[str, str, str, str, str, int]:
        return (p.file, p.name, p.version, p.arch, p.sha256.lower(), p.size)

    return ((source_commit or "").lower() == record.info.source_commit
            and sorted(map(key, claims)) == sorted(map(key, record.inputs)))


def _join_provenance(snapshot_id: str, built: Built, previous: SnapshotRecord | None,
                     staged: list[provenance.StagedPackage]) -> list[PublishedPackage]:
    known = {p.path: p for p in previous.packages} if previous else {}
    new = {built.placed[s.entry.file]: s for s in staged}
    packages: list[PublishedPackage] = []
    for entry in built.packages:
        old = known.get(entry.path)
        if old is not None and old.sha256 == entry.sha256:
            packages.append(old)
        elif entry.path in new:
            source = new[entry.path]
            packages.append(PublishedPackage(
                path=entry.path, name=entry.name, version=entry.version, arch=entry.arch,
                sha256=entry.sha256, size=entry.size, source_commit=source.source_commit,
                source_sha256=source.entry.sha256.lower(), published_in=snapshot_id))
        else:
            raise ProvenanceError(
                f"the new metadata references {entry.path}, which is neither in the previous "
                "snapshot's record nor one of the packages being published; refusing a "
                "snapshot with a package of unknown origin")
    return packages


def _prune(layout: RepoLayout, grace: float, now: float, beat: Heartbeat,
           protect: Collection[str] = ()) -> list[str]:
    current = layout.current_id()
    record = layout.record(current)
    keep = {current, record.info.parent if record else None, *protect}
    created = {d.name: d.lstat().st_ctime for d in layout.snapshots.iterdir()
               if d.is_dir() and not d.is_symlink()}
    doomed = plan_prune(created, keep, grace, now)
    for snapshot in doomed:
        discard(layout, layout.snapshot(snapshot), beat)
        beat.step(f"pruned snapshot {snapshot}")
    for leftovers in (layout.staging, layout.incoming):
        for entry in leftovers.iterdir():
            if entry.name not in protect and now - entry.lstat().st_mtime >= grace:
                discard(layout, entry, beat)
    return doomed


def prune_snapshots(root: Path, grace_seconds: float, *, now: float | None = None,
                    progress: Progress | None = None) -> list[str]:
    """Remove snapshots other than current and previous replaced more than `grace_seconds`
    ago (and abandoned staging/incoming trees as old). Returns the removed snapshot ids."""
    layout = RepoLayout(root)
    beat = Heartbeat(progress, f"prune {root}")
    if not layout.snapshots.is_dir():
        return []
    with os_errors(f"prune {root}", f"check the permissions of {root}"), \
            locked(layout.lock, beat):
        layout.ensure()
        return _prune(layout, grace_seconds, time.time() if now is None else now, beat)


def _cleanup(layout: RepoLayout, beat: Heartbeat) -> None:
    for leftover in layout.root.glob(f".{POINTER}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    for entry in layout.trash.iterdir():
        remove_tree(entry, beat)


def transaction(builder: Builder, root: Path, key: SigningKey, request: PublishRequest,
                grace_seconds: float, progress: Progress | None = None,
                now: float | None = None) -> SnapshotInfo:
    """Publish `request` into the repository at `root` (see `_transaction`)."""
    with os_errors(f"publish {builder.format} {request.snapshot_id} into {root}",
                   f"check the space and permissions of {root}; a rerun resumes"):
        return _transaction(builder, root, key, request, grace_seconds, progress, now)


def _transaction(builder: Builder, root: Path, key: SigningKey, request: PublishRequest,
                 grace_seconds: float, progress: Progress | None,
                 now: float | None) -> SnapshotInfo:
    """Publish `request` into the repository at `root` with `builder` (see module docstring).

    Reruns with the same snapshot id:
    - `current` is that snapshot, or it was current before (it is in current's lineage), with
      the same packages: nothing is done, the stored SnapshotInfo is returned;
    - it is complete but was never switched (a crash after the rename), built on the snapshot
      that is still current: the pointer is switched now;
    - otherwise (a crash earlier, or another snapshot was published meanwhile) it is built
      again from scratch on the current snapshot.
    """
    fmt = builder.format
    beat = Heartbeat(progress, f"publish {fmt} {request.snapshot_id}")
    manifest = provenance.load_manifest(request.manifest)
    claims = [p for p in manifest.packages if p.format == fmt]
    if not claims:
        raise InvalidInput(f"build manifest {request.manifest} lists no {fmt} packages: "
                           f"nothing to publish into the {fmt} repository")
    if not request.git_repo.is_dir():
        raise InvalidInput(f"git repository {request.git_repo} does not exist")
    files_dir = request.files_dir or request.manifest.parent
    layout = RepoLayout(root)
    snapshot_id = request.snapshot_id
    layout.ensure()
    with locked(layout.lock, beat):
        _cleanup(layout, beat)
        current = layout.current_id()
        existing = layout.record(snapshot_id) if layout.snapshot(snapshot_id).is_dir() else None
        if existing is not None:
            same = _same_inputs(existing, manifest.source_commit, claims)
            if snapshot_id in lineage(layout, current):
                if not same:
                    raise ConflictError(
                        f"snapshot {snapshot_id} of {root} was already published with other "
                        "packages; use a new snapshot id for a new publish")
                discard(layout, layout.incoming / snapshot_id)  # if killed after the switch
                beat.step("already published: nothing to do")
                return existing.info
            if same and existing.info.parent == current:
                beat.step("complete but not yet live (interrupted before the switch)")
                switch_pointer(root, snapshot_id)
                beat.step("switch done")
                discard(layout, layout.incoming / snapshot_id)
                _prune(layout, grace_seconds, time.time() if now is None else now, beat)
                return existing.info

        try:
            return _build_and_switch(builder, layout, key, request, manifest, claims, files_dir,
                                     current, grace_seconds, beat, now)
        except (PublishError, OSError):
            # refused or failed: leave nothing behind (a crash leaves it to the rerun)
            discard(layout, layout.staging / snapshot_id)
            discard(layout, layout.incoming / snapshot_id)
            raise


def _build_and_switch(builder: Builder, layout: RepoLayout, key: SigningKey,
                      request: PublishRequest, manifest: BuildManifest,
                      claims: list[ManifestPackage], files_dir: Path, current: str | None,
                      grace_seconds: float, beat: Heartbeat, now: float | None
                      ) -> SnapshotInfo:
    root, fmt, snapshot_id = layout.root, builder.format, request.snapshot_id
    timings: dict[str, float] = {}

    def timed(step: str, started: float) -> None:
        timings[step] = round(time.monotonic() - started, 3)
        beat.step(f"{step} done ({timings[step]:.3f} s)")

    started = time.monotonic()
    check_key(key, beat.raw)
    if request.promoted is None:
        source_commit = provenance.check_source_commit(request.git_repo, manifest.source_commit,
                                                       request.branch, beat.raw)
        origin = f"provenance: built from {source_commit}, on {request.branch}"
    else:
        source_commit, origin = provenance.check_promoted_source(
            request.git_repo, manifest.source_commit, request.branch, request.promoted,
            beat.raw)
    incoming = layout.incoming / snapshot_id
    discard(layout, incoming, beat)
    staged = provenance.stage_inputs(manifest, files_dir, fmt, incoming, beat.raw)
    timed("inputs", started)

    started = time.monotonic()
    staging = layout.staging / snapshot_id
    discard(layout, staging, beat)
    previous = layout.snapshot(current) if current else None
    previous_record = layout.record(current)
    if current is not None and previous_record is None:
        raise PublishError(f"the current snapshot {current} of {root} has no record "
                           f"({RECORD}); it was not published by this library")
    if previous is not None:
        clone_tree(previous, staging, link=builder.link_in_clone,
                   skip=lambda rel: rel == RECORD or builder.skip_in_clone(rel), beat=beat)
    else:
        staging.mkdir(parents=True)
    (staging / PRIVATE).mkdir(exist_ok=True)
    timed("clone", started)

    ctx = BuildContext(snapshot_id, staging, previous, previous_record, staged, key, beat)
    started = time.monotonic()
    built = builder.build(ctx)
    packages = _join_provenance(snapshot_id, built, previous_record, staged)
    shutil.copyfile(key.public_key, staging / KEY_FILE)
    timed("build", started)

    started = time.monotonic()
    builder.sign(ctx)
    timed("sign", started)

    started = time.monotonic()
    checks = builder.verify(ctx, built)
    timed("verify", started)

    before = {p.path for p in previous_record.packages} if previous_record else set()
    after = {p.path for p in packages}
    info = SnapshotInfo(
        snapshot_id=snapshot_id, format=fmt, repository=str(root), parent=current,
        created_at=datetime.now(UTC), source_commit=source_commit,
        added=sorted(after - before), removed=sorted(before - after),
        package_count=len(packages), checks=[origin, *checks, *built.notes], timings=timings,
        merged_commit=request.promoted.merged_commit if request.promoted else None,
        source_tree=request.promoted.tested_tree if request.promoted else None)
    record = SnapshotRecord(info=info, packages=sorted(packages, key=lambda p: p.path),
                            inputs=claims)
    # (steps after this point are not in info.timings: the record is already written)
    started = time.monotonic()
    write_atomic(staging / RECORD, record.model_dump_json(indent=1).encode())
    syncfs(staging)
    if layout.snapshot(snapshot_id).exists():
        discard(layout, layout.snapshot(snapshot_id))  # stale, never-live build
    os.rename(staging, layout.snapshot(snapshot_id))
    _fsync_dir(layout.snapshots)
    beat.step(f"stored done ({time.monotonic() - started:.3f} s)")
    started = time.monotonic()
    switch_pointer(root, snapshot_id)
    beat.step(f"switch done ({time.monotonic() - started:.3f} s)")
    started = time.monotonic()
    discard(layout, incoming)
    _prune(layout, grace_seconds, time.time() if now is None else now, beat)
    beat.step(f"prune done ({time.monotonic() - started:.3f} s)")
    return info
