"""The stream-events listener's memory on disk: how far it got, what it handed over lately, and
what it could not hand over yet.

- `last`: the time of the newest event handed over (or kept): after a reconnect, a restart or an
  outage of any length the listener asks Gerrit's REST API for what happened since then.
- `recent`: the identities of the events handed over in the last RECENT seconds: an event that
  arrives twice (from the stream and from the catch-up, or the stream again after a reconnect)
  is handed over once.
- `spool`: events whose hand-off failed (Temporal unreachable, ...), in arrival order; retried
  until they are handed over, never dropped. Events arriving meanwhile queue behind them, so the
  order Gerrit sent them in is the order the router sees.

Written atomically (a new file renamed over the old one) after every change, so a killed
listener loses nothing it had acknowledged.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import Field

from lockmaster.model.base import Model
from lockmaster.model.change import ReviewEvent

# How long the identities of handed-over events are remembered (and how far back a catch-up
# looks before `last`: Gerrit dates a message and its stream event separately).
RECENT = 600.0
OVERLAP = 60.0
# Two deliveries of one event may carry times this far apart (message date vs event time).
SAME_EVENT_WITHIN = 2.0


class JournalState(Model):
    last: float | None = None
    recent: list[tuple[str, float]] = Field(default_factory=list)
    spool: list[ReviewEvent] = Field(default_factory=list)


class EventJournal:
    """One connection's journal, in `path` (a JSON file; its directory is made)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.state = JournalState.model_validate_json(path.read_text())
        except FileNotFoundError:
            self.state = JournalState()
        except ValueError as exc:
            raise ValueError(
                f"the event journal {path} is unreadable ({exc}); move it aside to start "
                "afresh (events since the listener last ran are then not caught up)") from exc

    # --- questions --------------------------------------------------------------------------

    def catch_up_from(self) -> float | None:
        """Where a catch-up starts (None: never ran, nothing to catch up)."""
        return None if self.state.last is None else self.state.last - OVERLAP

    def seen(self, event: ReviewEvent) -> bool:
        """The event (or the same one with a slightly different time) was handed over lately,
        or is waiting in the spool."""
        identity, at = event.identity(), _time(event)
        if any(i == identity and abs(t - at) <= SAME_EVENT_WITHIN
               for i, t in self.state.recent):
            return True
        return any(e.identity() == identity and abs(_time(e) - at) <= SAME_EVENT_WITHIN
                   for e in self.state.spool)

    @property
    def spooled(self) -> list[ReviewEvent]:
        return list(self.state.spool)

    # --- changes ----------------------------------------------------------------------------

    def start(self, now: float | None = None) -> None:
        """The first connection ever: from now on, nothing is missed."""
        if self.state.last is None:
            self.state.last = time.time() if now is None else now
            self._save()

    def handed_over(self, event: ReviewEvent) -> None:
        self._remember(event)
        self._save()

    def keep(self, event: ReviewEvent) -> None:
        """The hand-off failed: keep the event for a retry."""
        self.state.spool.append(event)
        self._advance(event)
        self._save()

    def unspool(self, event: ReviewEvent) -> None:
        """The spool's first event was handed over at last."""
        if self.state.spool and self.state.spool[0] == event:
            self.state.spool.pop(0)
        self._remember(event)
        self._save()

    def _remember(self, event: ReviewEvent) -> None:
        self.state.recent.append((event.identity(), _time(event)))
        self._advance(event)
        horizon = (self.state.last or 0.0) - RECENT
        self.state.recent = [(i, t) for i, t in self.state.recent if t >= horizon]

    def _advance(self, event: ReviewEvent) -> None:
        at = _time(event)
        if self.state.last is None or at > self.state.last:
            self.state.last = at

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as out:
            out.write(self.state.model_dump_json())
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)


def _time(event: ReviewEvent) -> float:
    return event.created if event.created is not None else time.time()


def journal_path(state_dir: Path, connection: str) -> Path:
    return state_dir / "events" / f"{connection}.json"

