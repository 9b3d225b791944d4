"""Who may reach a TE: the restricted account's `authorized_keys` and each TE's lease file.

One restricted account per TE host, shared by all its TEs (TripleO had one too): its
`authorized_keys` holds one line per leased TE, the current lease's public key, bound to the
forced command for that TE and generation:

    command="<te-shell> --te te1 --generation 3 ...",restrict ssh-ed25519 AAAA... \
lockmaster-te:host1/te1:3

where <te-shell> is `DEFAULT_SHELL_COMMAND` (or e.g. `/opt/lockmaster/bin/lockmaster te-shell`).

Lines without our `lockmaster-te:` tag (an operator's) are left alone. Each TE also has a lease
file `<state_dir>/<name>.json` (its TESpec, the generation, whether it was revoked): the forced
command reads it to know the TE's domains and to refuse a generation that is no longer current
("lease ended"); the agent reads it again before acting.

Generations fence: a revoke of generation G removes keys of generations <= G and marks the lease
file revoked through G, so an authorize of G (or older) arriving late is refused.

Both files are replaced atomically (temp file + rename) under an flock, so sshd never reads a
half-written file and concurrent activities for different TEs do not lose each other's lines.
Deployment: sshd's `AuthorizedKeysFile` for the account points at `authorized_keys` (root-owned,
0644, in a root-owned directory: `StrictModes` is happy and the account cannot edit it); the
account can read the lease files and append to the log.
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from lockmaster.model.base import Model
from lockmaster.model.testenv import TESpec

TAG = "lockmaster-te"
_TAG_RE = re.compile(rf"\s{TAG}:(?P<host>[^/\s]+)/(?P<name>[^:\s]+):(?P<generation>\d+)\s*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# How sshd runs te-shell: this very interpreter (the worker's; no PATH lookup, no CLI imports),
# isolated (-I) from the session's environment and working directory.
DEFAULT_SHELL_COMMAND = (sys.executable, "-I", "-m", "lockmaster.testenv.shell")
KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


class AccessError(Exception):
    """The request cannot be honoured as given (bad key, bad name): retrying will not help."""


class StaleGeneration(AccessError):
    """A newer lease (or the revocation of this one) has already been recorded for the TE."""


class LeaseFile(Model):
    """`<state_dir>/<name>.json`: what the forced command knows about its TE."""

    te: TESpec
    generation: int
    revoked: bool = False

    def is_current(self, generation: int) -> bool:
        return not self.revoked and self.generation == generation


def normalize_public_key(text: str) -> str:
    """The "<type> <base64>" part of an OpenSSH public key line. Refuses options, several lines
    and blobs that do not decode to a key of the stated type: nothing is smuggled into our line."""
    fields = text.strip().split()
    if "\n" in text.strip() or len(fields) < 2:
        raise AccessError("public key must be one line: '<type> <base64> [comment]'")
    key_type, blob = fields[0], fields[1]
    if key_type not in KEY_TYPES:
        raise AccessError(f"unsupported public key type {key_type[:40]!r}")
    try:
        raw = base64.b64decode(blob, validate=True)
    except ValueError:
        raise AccessError("public key is not valid base64") from None
    length = int.from_bytes(raw[:4], "big")
    if raw[4 : 4 + length] != key_type.encode():
        raise AccessError(f"public key blob is not a {key_type} key")
    return f"{key_type} {blob}"


def _check_name(what: str, value: str) -> None:
    if not _NAME_RE.match(value):
        raise AccessError(f"{what} {value!r} must match {_NAME_RE.pattern}")


@dataclass(frozen=True)
class TEAccess:
    """Paths of one TE host's access setup. `shell_command`: how sshd runs `te-shell`."""

    authorized_keys: Path
    state_dir: Path
    socket: Path  # the worker agent's Unix socket
    log: Path  # te-shell appends one line per command here
    shell_command: tuple[str, ...] = DEFAULT_SHELL_COMMAND

    @classmethod
    def in_directory(
        cls, directory: Path, shell_command: tuple[str, ...] = DEFAULT_SHELL_COMMAND
    ) -> TEAccess:
        return cls(
            authorized_keys=directory / "authorized_keys",
            state_dir=directory,
            socket=directory / "agent.sock",
            log=directory / "te-shell.log",
            shell_command=shell_command,
        )

    def lease_file(self, name: str) -> Path:
        _check_name("TE name", name)
        return self.state_dir / f"{name}.json"

    def lease(self, name: str) -> LeaseFile | None:
        """The TE's lease file (None if absent or unreadable: treated as "no lease")."""
        try:
            return LeaseFile.model_validate_json(self.lease_file(name).read_text())
        except (OSError, ValidationError):
            return None

    def is_current(self, name: str, generation: int) -> bool:
        lease = self.lease(name)
        return lease is not None and lease.is_current(generation)

    def forced_command(self, spec: TESpec, generation: int) -> str:
        command = shlex.join(
            [
                *self.shell_command,
                "--te", spec.name,
                "--generation", str(generation),
                "--state-file", str(self.lease_file(spec.name)),
                "--socket", str(self.socket),
                "--log", str(self.log),
            ]
        )  # fmt: skip
        if '"' in command or "\\" in command:
            raise AccessError(f"paths in the forced command cannot contain quotes: {command}")
        return command

    def key_line(self, spec: TESpec, generation: int, public_key: str) -> str:
        key = normalize_public_key(public_key)
        command = self.forced_command(spec, generation)
        return f'command="{command}",restrict {key} {TAG}:{spec.host}/{spec.name}:{generation}'

    # --- changes ----------------------------------------------------------------------------

    def authorize(self, spec: TESpec, generation: int, public_key: str) -> None:
        """Accept `public_key` for lease `generation` of the TE, replacing its earlier key.
        Idempotent; raises StaleGeneration if a newer lease or this one's revocation is known."""
        _check_name("TE host", spec.host)
        line = self.key_line(spec, generation, public_key)
        with self._locked():
            lease = self.lease(spec.name)
            if lease is not None and (
                generation < lease.generation or (generation == lease.generation and lease.revoked)
            ):
                state = "revoked" if lease.revoked else "current"
                raise StaleGeneration(
                    f"TE {spec.key}: generation {generation} is stale "
                    f"(generation {lease.generation} is {state})"
                )
            # The lease file first: a key is never accepted before its shell would agree.
            self._write_lease(LeaseFile(te=spec, generation=generation))
            lines = [
                entry
                for entry in self._lines()
                if (tag := _tag(entry)) is None or tag[:2] != (spec.host, spec.name)
            ]
            self._write_lines([*lines, line])

    def revoke(self, spec: TESpec, generation: int) -> bool:
        """Stop keys of `generation` or older for the TE; True if a key line was removed.
        A newer lease's key stays."""
        with self._locked():
            removed = False
            kept: list[str] = []
            for entry in self._lines():
                tag = _tag(entry)
                if tag is not None and tag[:2] == (spec.host, spec.name) and tag[2] <= generation:
                    removed = True
                    continue
                kept.append(entry)
            if removed:
                self._write_lines(kept)
            lease = self.lease(spec.name)
            if lease is None or lease.generation <= generation:
                # Revoked *through* `generation`: a late authorize of it is refused.
                self._write_lease(LeaseFile(te=spec, generation=generation, revoked=True))
            return removed

    def authorized_generations(self, spec: TESpec) -> list[int]:
        """Generations with a key line for the TE (for checks and tests; at most one)."""
        tags = [_tag(entry) for entry in self._lines()]
        return [tag[2] for tag in tags if tag is not None and tag[:2] == (spec.host, spec.name)]

    # --- files ------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.authorized_keys.parent.mkdir(parents=True, exist_ok=True)
        lock = self.authorized_keys.with_name(self.authorized_keys.name + ".lock")
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _lines(self) -> list[str]:
        try:
            return self.authorized_keys.read_text().splitlines()
        except FileNotFoundError:
            return []

    def _write_lines(self, lines: list[str]) -> None:
        _write_atomic(self.authorized_keys, "".join(f"{entry}\n" for entry in lines))

    def _write_lease(self, lease: LeaseFile) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.lease_file(lease.te.name), lease.model_dump_json(indent=1) + "\n")


def _tag(line: str) -> tuple[str, str, int] | None:
    """(host, name, generation) of one of our lines; None for anyone else's."""
    tag = _TAG_RE.search(line)
    return (tag["host"], tag["name"], int(tag["generation"])) if tag else None


def _write_atomic(path: Path, text: str) -> None:
    """Write a sibling temp file, fsync, rename over `path` (keeping its mode, else 0644)."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
