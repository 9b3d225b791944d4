"""Events that one-shot processes could not hand over yet, kept on disk.

Gerrit runs a hook once and does not retry it, and a `lockmaster change` command has already
recorded its vote or upload: an event whose hand-off failed (Temporal down, the review system's
REST API down) would be lost. It is written here instead, one file per event, and handed over,
oldest first, before the next such process's own event, or by `lockmaster events flush`. These
processes run at once: files are created atomically and a lock file serialises the flushes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from lockmaster.model.change import ReviewEvent
from lockmaster.util.file_lock import locked

Deliver = Callable[[ReviewEvent], Awaitable[object]]


class KeptEvents:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def keep(self, event: ReviewEvent) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{time.time_ns():020d}-{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(event.model_dump_json())
        tmp.replace(path)
        return path

    def pending(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.json"))

    async def flush(self, deliver: Deliver) -> int:
        """Hand over every kept event, oldest first; returns how many. Stops at the first that
        fails (raising its error): the order Gerrit sent them in is kept."""
        if not self.pending():
            return 0
        done = 0
        with self._locked():
            for path in self.pending():
                try:
                    event = ReviewEvent.model_validate_json(path.read_text())
                except FileNotFoundError:
                    continue  # another flush took it
                except ValueError:
                    path.rename(path.with_suffix(".unreadable"))  # kept for a human, not lost
                    continue
                await deliver(event)
                path.unlink()
                done += 1
        return done

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        return locked(self.directory / ".lock")


def kept_events(state_path: Path, connection: str) -> KeptEvents:
    return KeptEvents(state_path / "events" / f"{connection}-kept")
