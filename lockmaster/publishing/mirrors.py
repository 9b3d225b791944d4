"""Transactional mirror sync: a published snapshot copied to a mirror, made live atomically.

Mirror layout (HTTP serves `<mirror>/current/`):

    <mirror>/current -> snapshots/<id>      relative symlink, replaced by rename(2)
    <mirror>/snapshots/<id>/                complete copies (the source tree minus .lockmaster/)
    <mirror>/snapshots/<id>.sync.json       MirrorRecord: the SyncReport and the package list
    <mirror>/incoming/<id>/                 a transfer in progress (resumed by a rerun)
    <mirror>/trash/                         trees being removed

`sync_mirror` works in this order, each step safe to interrupt:
1. read the mirror's state (current snapshot, complete snapshots, its report);
2. package files into incoming/<id>/ (rsync, `--link-dest` the mirror's current snapshot: an
   unchanged file is hardlinked there, never sent again);
3. the rest (metadata) into incoming/<id>/, compared by checksum (a Release rewritten in the
   same second may have the old one's size and time), hardlinks kept (by-hash entries are
   links of the named indices), `--delete` (a killed run's leftovers);
4. a dry-run rsync must find nothing left to do (checksums compared for metadata);
5. the report written next to the snapshot, incoming/<id> renamed to snapshots/<id>;
6. `sync -f`, then the pointer: `ln -sfn snapshots/<id> .current.<id>.tmp` and
   `mv -T .current.<id>.tmp current` (one rename: readers see the old tree or the new one);
7. snapshots other than current and previous, replaced more than `grace_seconds` ago, removed.
Nothing under current/ changes before step 6, so the mirror never serves metadata whose files it
lacks nor a Release whose indices differ. A rerun finds incoming/<id> (rsync completes it),
snapshots/<id> (only the switch is left) or current == <id> (returns the stored report).

Directory mirrors run the same shell steps locally (and take an flock on <mirror>/.lock); SSH
mirrors run them over `ssh` with the configured key and known_hosts (StrictHostKeyChecking=yes,
BatchMode) and need rsync and GNU coreutils there. One sync per mirror at a time: the caller
serializes syncs of one mirror (the lead's workflow does); directory mirrors also lock.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from lockmaster.publishing.errors import (
    HostKeyMismatch,
    InvalidInput,
    MirrorError,
    MirrorUnavailable,
    PublishError,
    os_errors,
)
from lockmaster.publishing.model import (
    DirectoryMirror,
    Mirror,
    MirrorRecord,
    RsyncSSHMirror,
    SnapshotRecord,
    SyncReport,
)
from lockmaster.publishing.snapshots import PRIVATE, RepoLayout, lineage, locked, plan_prune
from lockmaster.publishing.tools import Completed, Heartbeat, Progress, run

PACKAGE_PATTERNS = ("*.deb", "*.udeb", "*.ddeb", "*.rpm")
UNREACHABLE_RSYNC = {5, 10, 12, 30, 35, 255}

STATE_SCRIPT = r"""
cd -- "$1" 2>/dev/null || { echo NOROOT; exit 0; }
cur=$(readlink current 2>/dev/null || true)
echo "CURRENT $cur"
for d in snapshots/*/; do
  [ -d "$d" ] || continue; n=${d#snapshots/}; n=${n%/}
  echo "SNAPSHOT $(stat -c %Z "$d") $n"
done
for d in incoming/*/; do
  [ -d "$d" ] || continue; n=${d#incoming/}; n=${n%/}
  echo "INCOMING $(stat -c %Y "$d") $n"
done
for r in "$cur" "snapshots/$2"; do
  case "$r" in snapshots/?*) ;; *) continue;; esac
  if [ -f "$r.sync.json" ]; then echo "REPORT ${r#snapshots/}"; cat "$r.sync.json"; echo; fi
done
"""

LIST_PACKAGES_SCRIPT = r"""
cd -- "$1/snapshots/$2" && find . -type f \( -name '*.deb' -o -name '*.udeb' -o -name '*.ddeb' \
  -o -name '*.rpm' \) | sed 's|^\./||'
"""

PREPARE_SCRIPT = r"""
set -e
mkdir -p -- "$1/snapshots" "$1/incoming/$2" "$1/trash"
"""

REPORT_SCRIPT = r"""
set -e
cd -- "$1/snapshots"
cat > ".$2.sync.json.tmp"
mv -f ".$2.sync.json.tmp" "$2.sync.json"
"""

STORE_SCRIPT = r"""
set -e
cd -- "$1"
if [ ! -d "snapshots/$2" ]; then mv -T "incoming/$2" "snapshots/$2"; fi
"""

SWITCH_SCRIPT = r"""
set -e
cd -- "$1"
test -d "snapshots/$2"
sync -f . 2>/dev/null || sync
ln -sfn "snapshots/$2" ".current.$2.tmp"
mv -T ".current.$2.tmp" current
"""

PRUNE_SCRIPT = r"""
set -e
cd -- "$1"
mkdir -p trash
shift
for kind_name in "$@"; do
  kind=${kind_name%%:*}; name=${kind_name#*:}
  if [ -d "$kind/$name" ]; then mv -T "$kind/$name" "trash/$name.$$"; fi
  if [ "$kind" = snapshots ]; then rm -f "snapshots/$name.sync.json"; fi
done
rm -rf trash/* trash/.[!.]* 2>/dev/null || true
"""


@dataclass
class MirrorState:
    """What a mirror holds, as read at the start of a sync."""

    exists: bool
    current: str | None
    snapshots: dict[str, float] = field(default_factory=dict)  # id -> ctime (made complete)
    incoming: dict[str, float] = field(default_factory=dict)  # id -> mtime
    reports: dict[str, MirrorRecord] = field(default_factory=dict)


class _Transport:
    mirror: Mirror
    root: str

    def sh(self, script: str, *args: str, what: str, beat: Heartbeat,
           stdin: bytes | None = None) -> Completed:
        raise NotImplementedError

    def rsync_target(self, rel: str) -> str:
        raise NotImplementedError

    def rsync_options(self) -> list[str]:
        return []

    def remote_path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    @contextlib.contextmanager
    def lock(self, beat: Heartbeat) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def session(self, beat: Heartbeat) -> Iterator[None]:
        yield


class _Local(_Transport):
    def __init__(self, mirror: DirectoryMirror) -> None:
        self.mirror = mirror
        self.root = str(mirror.path.absolute())

    def sh(self, script: str, *args: str, what: str, beat: Heartbeat,
           stdin: bytes | None = None) -> Completed:
        return run(["sh", "-c", script, "sh", *args], what=f"mirror {self.mirror.name}: {what}",
                   progress=beat.raw, stdin=stdin, error=MirrorError,
                   hint=f"check that {self.root} is writable")

    def rsync_target(self, rel: str) -> str:
        return self.remote_path(rel)

    @contextlib.contextmanager
    def lock(self, beat: Heartbeat) -> Iterator[None]:
        Path(self.root).mkdir(parents=True, exist_ok=True)
        with locked(Path(self.root) / ".lock", beat):
            yield


class _SSH(_Transport):
    def __init__(self, mirror: RsyncSSHMirror) -> None:
        self.mirror = mirror
        if not mirror.path.startswith("/"):
            raise InvalidInput(f"mirror {mirror.name}: path {mirror.path!r} must be absolute")
        self.root = mirror.path.rstrip("/") or "/"
        for what, path in (("key_file", mirror.key_file),
                           ("known_hosts_file", mirror.known_hosts_file)):
            if not path.is_file():
                raise InvalidInput(f"mirror {mirror.name}: {what} {path} does not exist")

    control: Path | None = None  # the ControlMaster socket of the current session

    @contextlib.contextmanager
    def session(self, beat: Heartbeat) -> Iterator[None]:
        """One SSH connection for the whole sync (a sync runs ~10 remote steps): a master
        started with -f (stdio to /dev/null, so no pipe stays open), ended with -O exit. If
        this process dies, the master exits by itself after ControlPersist idle seconds."""
        scratch = Path(tempfile.mkdtemp(prefix="lm-ssh-"))
        control = scratch / "cm"
        errors = scratch / "stderr"
        try:
            with errors.open("wb") as err:
                started = subprocess.run(
                    [*self.ssh_command(), "-o", "ControlMaster=yes", "-o",
                     f"ControlPath={control}", "-o", "ControlPersist=60", "-f", "-N",
                     self._login()],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    timeout=self.mirror.connect_timeout + 30, check=False)
            if started.returncode != 0:
                raise _connection_error(self.mirror, "connect", Completed(
                    [], started.returncode, "", errors.read_text(errors="replace")))
            self.control = control
            beat.tick("connected")
            yield
        except subprocess.TimeoutExpired as exc:
            raise MirrorUnavailable(f"mirror {self.mirror.name}: connecting timed out") from exc
        finally:
            self.control = None
            if control.exists():
                subprocess.run([*self.ssh_command(), "-o", f"ControlPath={control}", "-O",
                                "exit", self._login()], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30, check=False)
            shutil.rmtree(scratch, ignore_errors=True)

    def ssh_command(self) -> list[str]:
        m = self.mirror
        shared = []
        if self.control is not None:
            shared = ["-o", "ControlMaster=no", "-o", f"ControlPath={self.control}"]
        return ["ssh", *shared, "-i", str(m.key_file), "-p", str(m.port),
                "-o", f"UserKnownHostsFile={m.known_hosts_file}",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", f"ConnectTimeout={int(max(1, m.connect_timeout))}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
                "-o", "LogLevel=ERROR"]

    def _login(self) -> str:
        host = f"[{self.mirror.host}]" if ":" in self.mirror.host else self.mirror.host
        return f"{self.mirror.user}@{host}"

    def sh(self, script: str, *args: str, what: str, beat: Heartbeat,
           stdin: bytes | None = None) -> Completed:
        remote = " ".join(["sh", "-c", shlex.quote(script), "sh", *map(shlex.quote, args)])
        result = run([*self.ssh_command(), self._login(), remote],
                     what=f"mirror {self.mirror.name}: {what}", progress=beat.raw, stdin=stdin,
                     ok=range(0, 256))
        if result.returncode == 255:
            raise _connection_error(self.mirror, what, result)
        if result.returncode != 0:
            raise MirrorError(f"mirror {self.mirror.name} ({self._login()}:{self.root}): {what} "
                              f"failed (exit {result.returncode}): {result.stderr.strip()}")
        return result

    def rsync_target(self, rel: str) -> str:
        return f"{self._login()}:{self.remote_path(rel)}"

    def rsync_options(self) -> list[str]:
        # -z: metadata is text; rsync does not recompress .deb/.rpm/.gz/.xz/.zst
        return ["-e", shlex.join(self.ssh_command()), f"--timeout={self.mirror.io_timeout}",
                "-z"]


def _connection_error(mirror: RsyncSSHMirror, what: str, result: Completed) -> PublishError:
    text = result.stderr.strip()
    where = f"mirror {mirror.name} ({mirror.user}@{mirror.host}:{mirror.port})"
    if re.search(r"Host key verification failed|HOST IDENTIFICATION HAS CHANGED|"
                 r"host key .* is not known|No .* host key is known", text, re.IGNORECASE):
        return HostKeyMismatch(
            f"{where}: the host key does not match {mirror.known_hosts_file} ({text}); check "
            "the mirror's identity, then update the known_hosts file")
    if "Permission denied" in text:
        error = MirrorError(f"{where}: authentication with {mirror.key_file} refused ({text}); "
                            "install the public key in the mirror user's authorized_keys")
        error.retryable = False
        return error
    return MirrorUnavailable(f"{where} is unreachable during {what}: {text or 'ssh exit 255'}. "
                             "The mirror still serves its previous snapshot; retry the sync "
                             "when it is back (it resumes)")


def _transport(mirror: Mirror) -> _Transport:
    if isinstance(mirror, DirectoryMirror):
        return _Local(mirror)
    return _SSH(mirror)


def _rsync(transport: _Transport, args: list[str], source: Path, dest_rel: str, *,
           what: str, beat: Heartbeat) -> Completed:
    command = ["rsync", "-rlpt", "--no-h", *transport.rsync_options(), *args,
               f"{source}/", transport.rsync_target(dest_rel) + "/"]
    result = run(command, what=f"mirror {transport.mirror.name}: {what}", progress=beat.raw,
                 ok=range(0, 256))
    if result.returncode == 0:
        return result
    mirror = transport.mirror
    if isinstance(mirror, RsyncSSHMirror) and result.returncode in UNREACHABLE_RSYNC:
        raise _connection_error(mirror, what, result)
    raise MirrorError(f"mirror {mirror.name}: {what} failed (rsync exit {result.returncode}): "
                      f"{result.stderr.strip()[-2000:]}")


def _stats(result: Completed) -> tuple[int, int]:
    def number(label: str) -> int:
        found = re.search(rf"^{label}: ([\d,.]+)", result.stdout, re.MULTILINE)
        return int(re.sub(r"[,.]", "", found.group(1))) if found else 0

    return number("Total bytes sent"), number("Number of regular files transferred")


def read_state(transport: _Transport, snapshot_id: str, beat: Heartbeat) -> MirrorState:
    result = transport.sh(STATE_SCRIPT, transport.root, snapshot_id, what="read state",
                          beat=beat)
    lines = result.stdout.splitlines()
    if lines[:1] == ["NOROOT"]:
        return MirrorState(exists=False, current=None)
    state = MirrorState(exists=True, current=None)
    pending: str | None = None
    for line in lines:
        if pending is not None:
            with contextlib.suppress(ValidationError, ValueError):
                state.reports[pending] = MirrorRecord.model_validate_json(line)
            pending = None
        elif line.startswith("CURRENT "):
            target = line[len("CURRENT "):].strip()
            state.current = target[len("snapshots/"):] if target.startswith("snapshots/") \
                else None
        elif line.startswith(("SNAPSHOT ", "INCOMING ")):
            kind, stamp, name = line.split(" ", 2)
            (state.snapshots if kind == "SNAPSHOT" else state.incoming)[name] = float(stamp)
        elif line.startswith("REPORT "):
            pending = line[len("REPORT "):]
    return state


def mirror_state(mirror: Mirror, progress: Progress | None = None) -> MirrorState:
    """What the mirror holds (its current snapshot, complete and incomplete snapshots)."""
    return read_state(_transport(mirror), "-", Heartbeat(progress, f"mirror {mirror.name}"))


def _packages_on_mirror(transport: _Transport, state: MirrorState, beat: Heartbeat) -> list[str]:
    current = state.current
    if current is None or current not in state.snapshots:
        return []
    stored = state.reports.get(current)
    if stored is not None and stored.report.snapshot_id == current:
        return stored.packages
    listed = transport.sh(LIST_PACKAGES_SCRIPT, transport.root, current,
                          what="list the current snapshot's packages", beat=beat)
    return sorted(line for line in listed.stdout.splitlines() if line)


def _superseded(layout: RepoLayout, record: SnapshotRecord, state: MirrorState) -> bool:
    current = state.current
    if current is None or current == record.info.snapshot_id:
        return False
    if record.info.snapshot_id in lineage(layout, current):
        return True
    stored = state.reports.get(current)
    return stored is not None and stored.report.source_created_at > record.info.created_at


def _check_copy(transport: _Transport, source: Path, dest_rel: str, beat: Heartbeat) -> None:
    """After the transfer, a dry run must find nothing to do: all files there with their
    sizes and times, and the metadata with identical content."""
    quick = _rsync(transport, ["-n", "-i", "--delete", f"--exclude=/{PRIVATE}/"], source,
                   dest_rel, what="check the copy (sizes and times)", beat=beat)
    exact = _rsync(transport, ["-n", "-i", "-c", f"--exclude=/{PRIVATE}/",
                               *[f"--exclude={p}" for p in PACKAGE_PATTERNS]],
                   source, dest_rel, what="check the copy (metadata checksums)", beat=beat)
    differences = [line for line in (quick.stdout + exact.stdout).splitlines() if line.strip()]
    if differences:
        raise MirrorError(f"mirror {transport.mirror.name}: after the transfer the copy in "
                          f"{dest_rel} still differs from {source}: {differences[:10]}; "
                          "retry the sync")


def sync_mirror(source_root: Path, snapshot_id: str, mirror: Mirror, *,
                grace_seconds: float = 24 * 3600, progress: Progress | None = None,
                now: float | None = None) -> SyncReport:
    """Make `mirror` serve snapshot `snapshot_id` of the repository at `source_root` (see the
    module docstring). Idempotent and resumable. PublishError (MirrorUnavailable when the
    mirror cannot be reached) leaves the mirror serving what it served before."""
    with os_errors(f"sync {snapshot_id} of {source_root} to mirror {mirror.name}",
                   "check the space and permissions of both; a rerun resumes"):
        return _sync(source_root, snapshot_id, mirror, grace_seconds, progress, now)


def _sync(source_root: Path, snapshot_id: str, mirror: Mirror, grace_seconds: float,
          progress: Progress | None, now: float | None) -> SyncReport:
    layout = RepoLayout(source_root)
    beat = Heartbeat(progress, f"sync {mirror.name} {snapshot_id}")
    source = layout.snapshot(snapshot_id)
    record = layout.record(snapshot_id) if source.is_dir() else None
    if record is None:
        raise InvalidInput(f"snapshot {snapshot_id} is not a complete published snapshot of "
                           f"{source_root} (no {source}/{PRIVATE}/snapshot.json)")
    transport = _transport(mirror)
    started, started_at = time.monotonic(), datetime.now(UTC)
    timings: dict[str, float] = {}
    mark = time.monotonic()

    def step(name: str) -> None:
        nonlocal mark
        timings[name] = round(time.monotonic() - mark, 3)
        mark = time.monotonic()
        beat.step(f"{name} done ({timings[name]:.3f} s)")

    with transport.lock(beat), transport.session(beat):
        state = read_state(transport, snapshot_id, beat)
        step("state")
        if state.current == snapshot_id and snapshot_id in state.snapshots:
            stored = state.reports.get(snapshot_id)
            if stored is not None and stored.report.snapshot_id == snapshot_id:
                beat.step("already synced: nothing to do")
                return stored.report
        packages = [p.path for p in record.packages]
        if _superseded(layout, record, state):
            beat.step(f"superseded: the mirror already serves {state.current}")
            return SyncReport(
                mirror=mirror.name, snapshot_id=snapshot_id, format=record.info.format,
                outcome="superseded", previous_snapshot=state.current, added=[], removed=[],
                package_count=len(packages), bytes_sent=0, files_transferred=0,
                source_created_at=record.info.created_at, started_at=started_at,
                finished_at=datetime.now(UTC),
                duration_seconds=round(time.monotonic() - started, 3), timings=timings)
        stored = state.reports.get(snapshot_id)
        if snapshot_id in state.snapshots and stored is not None:
            report = stored.report  # complete, written before a crash: only the switch is left
        else:
            report = _transfer(transport, layout, record, state, beat, step, started,
                               started_at, timings)
        transport.sh(SWITCH_SCRIPT, transport.root, snapshot_id, what="switch current",
                     beat=beat)
        step("switch")
        previous = report.previous_snapshot
        moment = time.time() if now is None else now
        doomed = plan_prune(state.snapshots, {snapshot_id, previous}, grace_seconds, moment)
        stale = [name for name, stamp in state.incoming.items()
                 if name != snapshot_id and moment - stamp >= grace_seconds]
        if doomed or stale:
            transport.sh(PRUNE_SCRIPT, transport.root,
                         *[f"snapshots:{s}" for s in doomed], *[f"incoming:{s}" for s in stale],
                         what="prune old snapshots", beat=beat)
        step("prune")
        return report


def _transfer(transport: _Transport, layout: RepoLayout, record: SnapshotRecord,
              state: MirrorState, beat: Heartbeat, step: Callable[[str], None], started: float,
              started_at: datetime, timings: dict[str, float]) -> SyncReport:
    snapshot_id = record.info.snapshot_id
    source = layout.snapshot(snapshot_id)
    packages = [p.path for p in record.packages]
    before = set(_packages_on_mirror(transport, state, beat))
    dest = f"incoming/{snapshot_id}"
    if snapshot_id in state.snapshots:
        dest = f"snapshots/{snapshot_id}"  # complete but its report is missing: refresh it
    transport.sh(PREPARE_SCRIPT, transport.root, snapshot_id, what="prepare", beat=beat)
    link = []
    if state.current is not None and state.current in state.snapshots:
        link = [f"--link-dest={transport.remote_path('snapshots/' + state.current)}"]
    # Package files: compared by size and time (a published file name never changes
    # content). Metadata: compared by checksum, since a Release or repomd.xml rewritten within
    # the same second can have the old one's size and time. Each pass leaves the other's files
    # alone (excluded files are not deleted).
    files = _rsync(transport, ["--stats", "--delete", *link, f"--exclude=/{PRIVATE}/",
                               "--include=*/", *[f"--include={p}" for p in PACKAGE_PATTERNS],
                               "--exclude=*", "--prune-empty-dirs"],
                   source, dest, what="copy package files", beat=beat)
    step("files")
    rest = _rsync(transport, ["--stats", "--delete", "--checksum", "--hard-links", *link,
                              f"--exclude=/{PRIVATE}/",
                              *[f"--exclude={p}" for p in PACKAGE_PATTERNS]],
                  source, dest, what="copy metadata", beat=beat)
    step("metadata")
    _check_copy(transport, source, dest, beat)
    step("check")
    sent = [_stats(files), _stats(rest)]
    report = SyncReport(
        mirror=transport.mirror.name, snapshot_id=snapshot_id, format=record.info.format,
        outcome="synced", previous_snapshot=state.current,
        added=sorted(set(packages) - before), removed=sorted(before - set(packages)),
        package_count=len(packages), bytes_sent=sum(s[0] for s in sent),
        files_transferred=sum(s[1] for s in sent), source_created_at=record.info.created_at,
        started_at=started_at, finished_at=datetime.now(UTC),
        duration_seconds=round(time.monotonic() - started, 3), timings=dict(timings))
    stored = MirrorRecord(report=report, packages=packages)
    transport.sh(REPORT_SCRIPT, transport.root, snapshot_id, what="write the report",
                 beat=beat, stdin=stored.model_dump_json().encode() + b"\n")
    transport.sh(STORE_SCRIPT, transport.root, snapshot_id, what="store the snapshot",
                 beat=beat)
    step("stored")
    return report


def prune_mirror(mirror: Mirror, grace_seconds: float, *, now: float | None = None,
                 progress: Progress | None = None) -> list[str]:
    """Remove the mirror's snapshots other than current and previous that were replaced more
    than `grace_seconds` ago (and incomplete transfers as old). Returns the removed ids."""
    transport = _transport(mirror)
    beat = Heartbeat(progress, f"prune mirror {mirror.name}")
    with os_errors(f"prune mirror {mirror.name}", "check its permissions"), \
            transport.lock(beat), transport.session(beat):
        state = read_state(transport, "-", beat)
        if not state.exists:
            return []
        stored = state.reports.get(state.current or "")
        previous = stored.report.previous_snapshot if stored else None
        moment = time.time() if now is None else now
        doomed = plan_prune(state.snapshots, {state.current, previous}, grace_seconds, moment)
        stale = [n for n, stamp in state.incoming.items() if moment - stamp >= grace_seconds]
        if doomed or stale:
            transport.sh(PRUNE_SCRIPT, transport.root, *[f"snapshots:{s}" for s in doomed],
                         *[f"incoming:{s}" for s in stale], what="prune old snapshots",
                         beat=beat)
        return doomed

