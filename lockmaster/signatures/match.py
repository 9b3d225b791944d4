"""Matching signatures against one build's logs: pure (no I/O of its own; a LogSource reads).

Each file is read once per build, whatever the number of signatures naming it, and bounded:
at most `max_bytes` of it (the first and the last halves of a larger file: infrastructure
trouble shows at a job's start, test failures at its end). Regexes are compiled when the
signatures are loaded. The cost per build: docs/signatures.md ("Cost").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from lockmaster.model.build import KnownFailure, Result
from lockmaster.signatures.format import Signature

MAX_FILES_PER_GLOB = 100  # a glob naming more files than this is cut (and it is a bad glob)
_GLOB_CHARS = frozenset("*?[")


class LogSource(Protocol):
    """A build's log directory, wherever it is."""

    def names(self, glob: str) -> list[str]:
        """The files `glob` names (relative POSIX paths), sorted; none: []."""
        ...

    def read(self, name: str, max_bytes: int) -> str | None:
        """At most `max_bytes` of the file as text (head and tail of a larger one); None when
        it cannot be read."""
        ...


def is_glob(name: str) -> bool:
    return any(char in _GLOB_CHARS for char in name)


def bounded_text(head: bytes, tail: bytes, skipped: int) -> str:
    """A file's head and tail as one text; the gap (if any) as a line of its own, so that no
    regex matches across it."""
    if not skipped:
        return (head + tail).decode("utf-8", errors="replace")
    return (head.decode("utf-8", errors="replace")
            + f"\n[... {skipped} bytes not read ...]\n"
            + tail.decode("utf-8", errors="replace"))


def read_bounded(path: Path, max_bytes: int) -> str:
    """`path` whole if it is at most `max_bytes`, else its first and last max_bytes/2."""
    with path.open("rb") as source:
        size = os.fstat(source.fileno()).st_size
        if size <= max_bytes:
            return bounded_text(source.read(max_bytes), b"", 0)
        half = max_bytes // 2
        head = source.read(half)
        source.seek(size - (max_bytes - half))
        tail = source.read(max_bytes - half)
    return bounded_text(head, tail, size - len(head) - len(tail))


class DirectorySource:
    """A log directory on this host (the executor's, or the store's root for driver directory)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def names(self, glob: str) -> list[str]:
        if not is_glob(glob):
            path = self.directory / glob
            return [glob] if path.is_file() and not path.is_symlink() else []
        found: list[str] = []
        for path in sorted(self.directory.glob(glob)):
            if path.is_file() and not path.is_symlink():
                found.append(path.relative_to(self.directory).as_posix())
                if len(found) >= MAX_FILES_PER_GLOB:
                    break
        return found

    def read(self, name: str, max_bytes: int) -> str | None:
        try:
            return read_bounded(self.directory / name, max_bytes)
        except OSError:
            return None


class _Texts:
    """Each file read once per build."""

    def __init__(self, source: LogSource, max_bytes: int) -> None:
        self.source = source
        self.max_bytes = max_bytes
        self._names: dict[str, list[str]] = {}
        self._texts: dict[str, str | None] = {}

    def files(self, globs: Iterable[str]) -> Iterable[str | None]:
        for glob in globs:
            if glob not in self._names:
                self._names[glob] = self.source.names(glob)
            for name in self._names[glob]:
                if name not in self._texts:
                    self._texts[name] = self.source.read(name, self.max_bytes)
                yield self._texts[name]


def match_build(signatures: Sequence[Signature], source: LogSource, *, project: str,
                job: str, result: Result | None, max_bytes: int) -> list[KnownFailure]:
    """The signatures in scope for this build whose regex is found in one of their files, in
    the order given. `result` None: try every signature in scope whatever its results."""
    texts = _Texts(source, max_bytes)
    found: list[KnownFailure] = []
    for signature in signatures:
        if not signature.applies(project, job, result):
            continue
        for text in texts.files(signature.files):
            if text is not None and signature.pattern.search(text):
                found.append(KnownFailure(signature=signature.name, bug=signature.bug))
                break
    return found

