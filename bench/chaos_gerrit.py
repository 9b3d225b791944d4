"""The chaos harness's Gerrit: the tests' fake Gerrit (REST over HTTP, stream-events over SSH)
with what a real Gerrit does on submit (the branch moves in git, change-merged is sent) and an
outage switch (every REST call answers 500, stream-events sessions are dropped and get nothing).

Every event the harness makes is `record()`ed in the fake's REST state first (so the listener's
catch-up can replay it) and then emitted, unless the stream is down: `sent` and `withheld`
count both ways."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes.gerrit import FakeGerrit, _Fault
from tests.gitrepos import ReviewSite, run_git


@dataclass
class Recorded:
    """One event the harness made true in Gerrit: what lockmaster must act on."""

    kind: str  # upload, recheck, approve, merged
    change: int
    patchset: int
    at: float
    emitted: bool


@dataclass
class GerritLedger:
    events: list[Recorded] = field(default_factory=list)
    merged_events: dict[int, str] = field(default_factory=dict)  # change -> newRev
    merge_conflicts: list[int] = field(default_factory=list)


class ChaosGerrit(FakeGerrit):
    def __init__(self, site: ReviewSite, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.site = site
        self.ledger = GerritLedger()
        self.down = False  # REST answers 500, streams get nothing
        self.outage_refusals = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # --- outage -------------------------------------------------------------------------------

    def _take_fault(self, request: web.Request, after_apply: bool) -> _Fault | None:
        if self.down and not after_apply:
            self.outage_refusals += 1
            return _Fault(request.path, 500, 1, False, None)
        return super()._take_fault(request, after_apply)

    async def go_down(self) -> None:
        self.down = True
        await self.drop_streams()

    async def come_back(self) -> None:
        self.down = False
        # Sessions opened during the outage missed events: drop them so the listener
        # reconnects and catches up (as it would after Gerrit's restart).
        await self.drop_streams()

    async def drop_streams(self) -> None:
        for process in list(self._streams):
            process.get_extra_info("connection").close()
        deadline = time.monotonic() + 5
        while self._streams and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    # --- events -------------------------------------------------------------------------------

    async def publish(self, kind: str, event: dict[str, Any]) -> None:
        """Record the event in the REST state, then send it on stream-events (if up)."""
        self.record(event)
        emitted = False
        if not self.down:
            emitted = await self.emit(event) > 0
        number = int(event["change"]["number"])
        self.ledger.events.append(Recorded(kind, number, int(event["patchSet"]["number"]),
                                           time.time(), emitted))

    # --- submit: the branch moves, change-merged follows ---------------------------------------

    async def _submit(self, request: web.Request) -> web.Response:
        change = self._find(request.match_info["id"])
        if change.status == "NEW":
            newrev = await asyncio.to_thread(
                merge_into_branch, self.site.repo(change.project), change.branch,
                change.current.commit)
            if newrev is None:
                self.ledger.merge_conflicts.append(change.number)
                raise web.HTTPConflict(text="merge conflict")
        else:
            newrev = None
        response = await super()._submit(request)
        if newrev is not None:
            self.ledger.merged_events[change.number] = newrev
            task = asyncio.create_task(self._announce_merge(change.number, newrev))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return response

    async def _announce_merge(self, number: int, newrev: str) -> None:
        await asyncio.sleep(0.05)  # after the submit's answer, as Gerrit
        await self.publish("merged", self.change_merged_event(number, newrev=newrev))


def merge_into_branch(repo: Path, branch: str, commit: str) -> str | None:
    """Gerrit's merge-if-necessary: fast-forward when the commit sits on the branch's tip, else
    a merge commit; None on a conflict (nothing changed)."""
    ref = f"refs/heads/{branch}"
    tip = run_git("rev-parse", ref, cwd=repo).strip()
    try:
        run_git("merge-base", "--is-ancestor", tip, commit, cwd=repo)
        run_git("update-ref", ref, commit, tip, cwd=repo)
        return commit
    except RuntimeError:
        pass
    try:
        tree = run_git("merge-tree", "--write-tree", tip, commit, cwd=repo).split()[0]
    except RuntimeError:
        return None
    merge = run_git("commit-tree", tree, "-p", tip, "-p", commit, cwd=repo,
                    input=f"Merge {commit[:12]} into {branch}\n").strip()
    run_git("update-ref", ref, merge, tip, cwd=repo)
    return merge
