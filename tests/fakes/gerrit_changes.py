"""The fake Gerrit's changes (what its REST API and stream-events describe)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakePatchset:
    number: int
    commit: str
    message: str
    created: int = field(default_factory=lambda: int(time.time()))
    parents: list[str] = field(default_factory=list)  # commits this one sits on


@dataclass
class FakeChange:
    project: str
    branch: str
    number: int
    change_id: str
    status: str
    patchsets: list[FakePatchset]
    # label -> username -> value (current patchset only, as Gerrit without copy rules)
    votes: dict[str, dict[str, int]] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))
    wip: bool = False
    private: bool = False
    # When anything about the change last changed (Gerrit's `updated`; `since:` queries).
    updated: float = field(default_factory=time.time)

    @property
    def current(self) -> FakePatchset:
        return self.patchsets[-1]

    def patchset(self, revision: str) -> FakePatchset | None:
        """By sha, patchset number, or `current`, as Gerrit's revision ids."""
        for ps in self.patchsets:
            if revision in (ps.commit, str(ps.number)):
                return ps
        return self.current if revision == "current" else None

    def approvals(self) -> dict[str, int]:
        return {
            label: max(v for v in by_user.values())
            for label, by_user in self.votes.items()
            if any(by_user.values())
        }


def gerrit_date(ts: float) -> str:
    millis = int(ts * 1000) % 1000
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{millis:03d}000000"
