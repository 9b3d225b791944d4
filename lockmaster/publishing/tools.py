"""Plumbing shared by the publishing modules: running tools with heartbeats, hashing, atomic
writes. Every long wait calls the caller's `progress` at least every HEARTBEAT seconds."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockmaster.publishing.errors import PublishError, ToolError

Progress = Callable[[str], None]
HEARTBEAT = 2.0  # seconds between progress calls while a tool runs
CHUNK = 1 << 20


def _ignore(message: str) -> None:
    return None


class Heartbeat:
    """Wraps a progress callback: `step()` messages always go through, `tick()` messages at most
    every `interval` seconds (for loops over many files)."""

    def __init__(self, progress: Progress | None, prefix: str = "",
                 interval: float = 1.0) -> None:
        self.progress = progress or _ignore
        self.prefix = f"{prefix}: " if prefix else ""
        self.interval = interval
        self._last = 0.0

    def step(self, message: str) -> None:
        self._last = time.monotonic()
        self.progress(self.prefix + message)

    def tick(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.progress(self.prefix + message)

    def raw(self, message: str) -> None:
        """For callees that take a plain Progress: throttled like tick()."""
        self.tick(message)


@dataclass(frozen=True)
class Completed:
    command: list[str]
    returncode: int
    stdout: str
    stderr: str


def _tail(text: str, lines: int = 25) -> str:
    found = text.strip().splitlines()
    return "\n".join(found[-lines:])


def run(
    command: Sequence[str | os.PathLike[str]],
    *,
    what: str,
    progress: Progress | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    timeout: float | None = None,
    ok: Sequence[int] = (0,),
    hint: str = "",
    error: type[PublishError] = ToolError,
) -> Completed:
    """Run a tool, calling `progress` every HEARTBEAT seconds while it runs; ToolError (or
    `error`) with its output when it exits with a code not in `ok`. The child is killed if
    anything (including `progress`) raises while it runs."""
    argv = [os.fspath(part) for part in command]
    full_env = dict(os.environ)
    full_env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})
    if env:
        full_env.update(env)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
        )
    except FileNotFoundError as exc:
        raise _error(error, f"{what}: `{argv[0]}` is not installed (install the Debian package "
                     "that provides it)", argv) from exc
    pending: bytes | None = stdin
    try:
        while True:
            try:
                out, err = proc.communicate(pending, timeout=HEARTBEAT)
                break
            except subprocess.TimeoutExpired:
                pending = None
                elapsed = time.monotonic() - started
                if timeout is not None and elapsed > timeout:
                    raise _error(error, f"{what}: `{shlex.join(argv)}` still running after "
                                 f"{timeout:.0f} s; killed", argv) from None
                if progress:
                    progress(f"{what}: running for {elapsed:.0f} s")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    if proc.returncode not in ok:
        output = _tail(stderr) or _tail(stdout)
        message = f"{what} failed (exit {proc.returncode}): `{shlex.join(argv)}`"
        if output:
            message += "\n" + output
        if hint:
            message += f"\nHow to fix: {hint}"
        raise _error(error, message, argv, proc.returncode, stderr + stdout)
    return Completed(argv, proc.returncode, stdout, stderr)


def _error(kind: type[PublishError], message: str, command: list[str],
           returncode: int | None = None, output: str = "") -> PublishError:
    found = kind(message)
    found.command = command  # type: ignore[attr-defined]
    found.returncode = returncode  # type: ignore[attr-defined]
    found.output = output  # type: ignore[attr-defined]
    return found


def sha256_file(path: Path, beat: Heartbeat | None = None) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if beat:
                beat.tick(f"hashing {path.name}")
    return digest.hexdigest(), size


def write_atomic(path: Path, data: bytes) -> None:
    """Write `path` so that readers see the old content or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def syncfs(path: Path) -> None:
    """Flush the file system holding `path` (before a pointer switch makes its data live)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        libc_syncfs = getattr(os, "syncfs", None)
        if libc_syncfs is not None:  # pragma: no cover - not in CPython 3.11
            libc_syncfs(fd)
        else:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.syncfs(fd) != 0:
                os.sync()
    finally:
        os.close(fd)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A private temporary directory (short path: gpg sockets live in such homes)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def is_plain_relative(path: str) -> bool:
    """A path inside a tree: relative, no '..', '.' or empty parts, no backslashes."""
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and "\\" not in path and not any(
        p in ("", ".", "..") for p in parts)
