"""The signatures an executor matches with: its configured directory, read again when a file
in it changes (a signature merged and checked out is used by the next build, no restart).

A bad file never stops a build: it is left out with a warning naming it and saying why (once
per version of the directory); `lockmaster config check` and `lockmaster signatures check` refuse
it before it gets there.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from lockmaster.config.models import LockmasterConfig
from lockmaster.config.signatures import DEFAULT_MAX_BYTES, signatures_directory
from lockmaster.model.build import BuildResult, KnownFailure, Result
from lockmaster.signatures.format import SUFFIXES, Signature, load_directory
from lockmaster.signatures.match import DirectorySource, match_build

log = logging.getLogger(__name__)

# A build's matching gives up after this (its result is reported without known failures): the
# reads are bounded, but a pathological regex is not (Python's re has no timeout).
MATCH_TIMEOUT = 60.0

_Stamp = tuple[tuple[str, int, int], ...]


def _stamp(directory: Path) -> _Stamp | None:
    """What the directory holds now (names, sizes, mtimes); None: no directory."""
    try:
        entries = []
        for path in directory.iterdir():
            if path.suffix in SUFFIXES:
                stat = path.stat()
                entries.append((path.name, stat.st_size, stat.st_mtime_ns))
    except OSError:
        return None
    return tuple(sorted(entries))


class SignatureLibrary:
    def __init__(self, directory: Path, *, required: bool = False,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """`required`: the configuration names the directory, so its absence is worth a
        warning (the default directory may well not exist). `max_bytes`: read per log file."""
        self.directory = directory
        self.required = required
        self.max_bytes = max_bytes
        self._stamp: _Stamp | None = None
        self._signatures: list[Signature] = []
        self._loaded = False
        self._lock = threading.Lock()  # builds run concurrently (threads of the matching)
        self._warned: set[str] = set()

    def current(self) -> list[Signature]:
        """The usable signatures as the directory holds them now."""
        with self._lock:
            stamp = _stamp(self.directory)
            if self._loaded and stamp == self._stamp:
                return self._signatures
            self._stamp, self._loaded = stamp, True
            if stamp is None:
                if self.required:
                    self._once(f"missing {self.directory}",
                               "known-failure signatures: the directory %s (signatures."
                               "directory) does not exist; no build is matched", self.directory)
                self._signatures = []
                return self._signatures
            signatures, errors = load_directory(self.directory)
            for error in errors:
                self._once(f"{error.file} {stamp}",
                           "known-failure signature left out: %s", str(error))
            self._signatures = signatures
            log.info("known-failure signatures: %d loaded from %s", len(signatures),
                     self.directory)
            return signatures

    def match(self, directory: Path, project: str, job: str, result: Result | None
              ) -> list[KnownFailure]:
        """Blocking: the signatures found in the build's log `directory`."""
        return match_build(self.current(), DirectorySource(directory), project=project,
                           job=job, result=result, max_bytes=self.max_bytes)

    async def annotate(self, build: BuildResult, directory: Path, project: str) -> None:
        """Fill `build.known_failures` from its log directory; never raises (a build's result
        never depends on its signatures), gives up after MATCH_TIMEOUT."""
        try:
            async with asyncio.timeout(MATCH_TIMEOUT):
                build.known_failures = await asyncio.to_thread(
                    self.match, directory, project, build.job, build.result)
        except TimeoutError:
            log.warning("known-failure signatures: matching the logs of build %s took more "
                        "than %g s; reported without known failures (a slow regex in %s?)",
                        build.build_id, MATCH_TIMEOUT, self.directory)
        except Exception:
            log.exception("known-failure signatures: matching the logs of build %s failed",
                          build.build_id)
        if build.known_failures:
            log.info("build %s (%s, %s): known failure(s) %s", build.build_id, build.job,
                     build.result, ", ".join(f"{k.signature} {k.bug}"
                                             for k in build.known_failures))

    def _once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)


def library_for(config: LockmasterConfig) -> SignatureLibrary | None:
    """None: signatures are switched off (signatures.enabled false)."""
    if not config.signatures.enabled:
        return None
    directory, explicit = signatures_directory(config)
    return SignatureLibrary(directory, required=explicit,
                            max_bytes=config.signatures.max_bytes_per_file)
