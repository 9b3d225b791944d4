"""The simulated Gerrit: the local review system (bare git repositories and JSON change records)
in a temporary directory, with the scenario's changes in it, recording every submit.

Reports land in the change records as lockmaster's messages (the report module reads them);
submits by the system go through `SimulatedGerritDriver.submit`, which refuses the changes the
scenario says to refuse and, like Gerrit, announces a merge with a change-merged event.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.change import ChangeInfo, ChangeRef, ReviewEvent
from lockmaster.review.base import ReviewDriver, SubmitRefused
from lockmaster.review.local import LocalReviewDriver, LocalReviewStore
from lockmaster.simulate.clock import Clock
from lockmaster.simulate.layout import SIM_CONNECTION
from lockmaster.simulate.scenario import ChangeSpec, Scenario

log = logging.getLogger(__name__)

DEVELOPER = "developer"
REVIEWER = "core-reviewer"


@dataclass
class MergeRecord:
    change: str
    number: int
    patchset: int
    project: str
    branch: str
    at: float


class SimulatedGerritDriver(LocalReviewDriver):
    """The review driver the workers get: submits are recorded, and refused when scripted."""

    def __init__(self, name: str, store: LocalReviewStore, gerrit: SimulatedGerrit) -> None:
        super().__init__(name, store.root)
        self.store = store
        self.gerrit = gerrit

    async def submit(self, change: ChangeRef) -> None:
        name = self.gerrit.name_of(change.number)
        if name in self.gerrit.refuse:
            self.gerrit.refused.append((name, self.gerrit.clock.now()))
            raise SubmitRefused(f"change {change.number} cannot be merged (the scenario "
                                "refuses its submit)")
        await super().submit(change)
        self.gerrit.merged(name, change)


@dataclass
class SimulatedGerrit:
    scenario: Scenario
    config: LockmasterConfig
    clock: Clock
    stores: dict[str, LocalReviewStore] = field(default_factory=dict)
    drivers: dict[str, ReviewDriver] = field(default_factory=dict)
    merges: list[MergeRecord] = field(default_factory=list)
    refused: list[tuple[str, float]] = field(default_factory=list)
    # Called with the change-merged event of every merge by the system (Gerrit sends one).
    on_merged: Callable[[ReviewEvent], Awaitable[object]] | None = None
    pending: set[asyncio.Task[object]] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.numbers = self.scenario.numbers()
        self.names = {number: name for name, number in self.numbers.items()}
        self.refuse = self.scenario.refused_submits()
        for name in self.config.connections:
            store = LocalReviewStore(self.config.local_review_path(name), name)
            self.stores[name] = store
            self.drivers[name] = SimulatedGerritDriver(name, store, self)

    # --- lookups ---------------------------------------------------------------------------

    def name_of(self, number: int) -> str:
        return self.names.get(number, str(number))

    def connection_of(self, name: str) -> str:
        project = self.config.project(self.scenario.changes[name].project)
        if project is None:  # an unmanaged project: in the simulated Gerrit only
            return SIM_CONNECTION
        return project.connection

    def store_of(self, name: str) -> LocalReviewStore:
        return self.stores[self.connection_of(name)]

    def info(self, name: str) -> ChangeInfo:
        return self.store_of(name).info(self.numbers[name])

    def record(self, name: str) -> dict[str, Any]:
        return self.store_of(name).record(self.numbers[name])

    # --- set-up ------------------------------------------------------------------------------

    def setup(self) -> None:
        """Projects (a repository each, with every branch a change is on), then the changes,
        parents first, numbered in the scenario's order; then the ones merged already."""
        projects = [(p.name, p.connection) for p in self.config.projects]
        projects += [(name, SIM_CONNECTION) for name in self.scenario.unmanaged_projects]
        for project, connection in projects:
            store = self.stores[connection]
            store.create_project(project, {"README": f"{project}\n"})
            branches = {c.branch for c in self.scenario.changes.values()
                        if c.project == project} - {"master"}
            for branch in sorted(branches):
                _git(store.repo(project), "branch", branch, "master")
        for name in self._creation_order():
            self._create(name, self.scenario.changes[name])
        for name, spec in self.scenario.changes.items():
            store, number = self.store_of(name), self.numbers[name]
            if spec.merged:
                store.submit(self.info(name).ref())
            if spec.wip:
                store.set_wip(number, True, author=DEVELOPER)
            if spec.private:
                store.set_private(number, True, author=DEVELOPER)

    def _creation_order(self) -> list[str]:
        order: list[str] = []

        def visit(name: str) -> None:
            if name in order:
                return
            parent = self.scenario.changes[name].parent
            if parent:
                visit(parent)
            order.append(name)

        for name in self.scenario.changes:
            visit(name)
        return order

    def _create(self, name: str, spec: ChangeSpec) -> None:
        number = self.numbers[name]
        self.store_of(name).upload(
            spec.project, number=number, branch=spec.branch,
            files=spec.files if spec.files is not None else {own_file(number): f"{name}\n"},
            subject=f"Change {name}",
            parent=self.numbers[spec.parent] if spec.parent else None,
            depends_on=[self.numbers[d] for d in spec.depends_on], owner=DEVELOPER,
        )

    # --- merges by the system -------------------------------------------------------------------

    def merged(self, name: str, change: ChangeRef) -> None:
        self.merges.append(MergeRecord(name, change.number, change.patchset, change.project,
                                       change.branch, self.clock.now()))
        if self.on_merged is None:
            return
        event = ReviewEvent(
            type="change-merged", connection=change.connection, project=change.project,
            branch=change.branch, change=change.number, patchset=change.patchset,
            commit=change.commit, change_id=change.change_id, url=change.url,
        )
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(
            self._announce(event), name=name
        )
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _announce(self, event: ReviewEvent) -> object:
        assert self.on_merged is not None
        try:
            return await self.on_merged(event)
        except Exception as exc:  # the merge stands; the event is lost, as with a failed hook
            log.exception("change-merged event for change %s", event.change)
            self.errors.append(f"change-merged event for change {event.change}: {exc}")
            return None


def own_file(number: int) -> str:
    """The file a change adds when the scenario gives it none (and rewrites per patchset)."""
    return f"change-{number}.txt"


def _git(repo: Path, *args: str) -> None:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo} failed: {proc.stderr.strip()}")
