"""Where `lockmaster te lease` keeps what a lease gives its holder, and removing it when the
lease ends.

A lease leaves two secrets on the holder's machine: the TE description (TripleO's JSON, which
carries the private key in `ssh-key` and every node's `pm_password`) and the private key alone
(for `ssh -i`). Both are written mode 0600, never over an existing file, to

    <state-dir>/te-leases/<lease-id>/te.json        the description ($TE_DATAFILE)
    <state-dir>/te-leases/<lease-id>/te.json.key    the key

or to the paths the holder names (`--datafile`, `--key-file`; the key goes beside a named
description as `<datafile>.key` unless named too). `<state-dir>/te-leases/<lease-id>/lease.json`
records which files a lease has (no secret in it), so that `te release` removes them, and so do
`te renew`, `te lease` and `te list` as soon as the broker says the lease has ended (expired,
force-released).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lockmaster.config.models import LockmasterConfig
from lockmaster.leases.errors import TEError
from lockmaster.model.testenv import LeaseState, LeaseStatus
from lockmaster.starters.testenv import TEBrokers

LEASES_DIR = "te-leases"
DATAFILE = "te.json"
RECORD = "lease.json"
KEY_SUFFIX = ".key"
# A lease id names a directory: no separators, no leading dot.
_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,:@+=-]*\Z")


class LeaseFileError(ValueError):
    """A path the files cannot go to (bad input: nothing was leased)."""


@dataclass
class LeaseFiles:
    lease_id: str
    label: str
    directory: Path  # <state-dir>/te-leases/<lease-id>: the record, and the files by default
    datafile: Path
    key_file: Path
    generation: int = 0
    te: str | None = None

    @property
    def record_path(self) -> Path:
        return self.directory / RECORD

    def record(self, status: LeaseStatus) -> None:
        """Note the granted lease and its files (before they are written: a holder killed in
        between leaves a record whose files are cleaned up all the same)."""
        self.generation = status.generation
        self.te = status.te.key if status.te else None
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.record_path.write_text(json.dumps({
            "id": self.lease_id, "label": self.label, "generation": self.generation,
            "te": self.te, "datafile": str(self.datafile), "key-file": str(self.key_file),
        }, indent=2) + "\n")

    def remove(self) -> list[Path]:
        """Remove the description, the key and the record; returns the secrets removed."""
        removed = []
        for path in (self.datafile, self.key_file):
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
        self.record_path.unlink(missing_ok=True)
        try:
            self.directory.rmdir()
        except OSError:
            pass  # not ours to empty (the holder put something there) or already gone
        return removed


def leases_root(config: LockmasterConfig) -> Path:
    return config.state_path / LEASES_DIR


def lease_dir(config: LockmasterConfig, lease_id: str) -> Path | None:
    """The lease's directory, or None for an id that cannot name one."""
    if not _SAFE_ID.match(lease_id):
        return None
    return leases_root(config) / lease_id


def plan(config: LockmasterConfig, lease_id: str, label: str, datafile: Path | None,
         key_file: Path | None) -> LeaseFiles:
    """Where a new lease's files go; raises LeaseFileError for paths they cannot go to.
    Writes nothing (so a lease that is never granted leaves nothing behind)."""
    directory = lease_dir(config, lease_id)
    if directory is None:
        raise LeaseFileError(f"--id {lease_id!r}: use letters, digits and . _ - (it names the "
                             f"lease's directory under {leases_root(config)})")
    if directory.exists() or directory.is_symlink():
        raise LeaseFileError(f"lease {lease_id} already has files in {directory}: release it "
                             "(lockmaster te release) or choose another --id")
    data = _absolute(datafile) if datafile is not None else directory / DATAFILE
    key = _absolute(key_file) if key_file is not None else data.with_name(data.name + KEY_SUFFIX)
    if data == key:
        raise LeaseFileError(f"--datafile and --key-file both name {data}")
    _check_creatable(directory, "the state directory")
    for option, path, named in (("--datafile", data, datafile is not None),
                                ("--key-file", key, key_file is not None or datafile is not None)):
        if named:
            _check_new_file(option, path)
    return LeaseFiles(lease_id, label, directory, data, key)


def recorded(config: LockmasterConfig) -> list[LeaseFiles]:
    """Every lease with files on this machine (records that cannot be read are skipped)."""
    root = leases_root(config)
    if not root.is_dir():
        return []
    found = []
    for record in sorted(root.glob(f"*/{RECORD}")):
        files = _load(record)
        if files is not None:
            found.append(files)
    return found


def recorded_lease(config: LockmasterConfig, lease_id: str) -> LeaseFiles | None:
    directory = lease_dir(config, lease_id)
    return _load(directory / RECORD) if directory is not None else None


async def sweep(brokers: TEBrokers, config: LockmasterConfig,
                lease_id: str | None = None) -> list[tuple[LeaseFiles, list[Path]]]:
    """Remove the files of every recorded lease (or just `lease_id`) that the broker says has
    ended; a broker that cannot be asked leaves them as they are."""
    if lease_id is None:
        leases = recorded(config)
    else:
        one = recorded_lease(config, lease_id)
        leases = [one] if one is not None else []
    done = []
    for files in leases:
        try:
            status = await brokers.lease_status(files.label, files.lease_id)
        except TEError:
            continue
        if status.state in (LeaseState.ENDED, LeaseState.UNKNOWN):
            done.append((files, files.remove()))
    return done


def _load(record: Path) -> LeaseFiles | None:
    try:
        data = json.loads(record.read_text())
        return LeaseFiles(lease_id=str(data["id"]), label=str(data["label"]),
                          directory=record.parent, datafile=Path(data["datafile"]),
                          key_file=Path(data["key-file"]), generation=int(data["generation"]),
                          te=data.get("te"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _absolute(path: Path) -> Path:
    # Recorded for `te release`, which may run from elsewhere: absolute, `~` expanded.
    return Path(os.path.abspath(path.expanduser()))


def _check_new_file(option: str, path: Path) -> None:
    if path.is_dir():
        raise LeaseFileError(f"{option} {path} is a directory: name a file")
    if path.exists() or path.is_symlink():
        raise LeaseFileError(f"{option} {path} already exists: name a new file (a TE's key "
                             "never replaces a file)")
    if why := _not_creatable(path.parent):
        raise LeaseFileError(f"{option} {path}: {why}")


def _check_creatable(directory: Path, what: str) -> None:
    if why := _not_creatable(directory):
        raise LeaseFileError(f"{what} ({directory}): {why}")


def _not_creatable(directory: Path) -> str | None:
    """Why `directory` can neither be used nor made (its nearest existing ancestor must be a
    writable directory), or None."""
    probe = directory
    while not probe.exists():
        if probe.is_symlink():
            return f"{probe} is a dangling symbolic link"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"cannot write in {probe}"
    return None
