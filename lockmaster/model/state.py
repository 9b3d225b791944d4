"""The speculative state a buildset tests: branch tips with changes merged on top, in order."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lockmaster.model.base import Model
from lockmaster.model.change import ChangeRef
from lockmaster.model.interned import Interned


class ProjectState(Model):
    """One project's repository state: `base` (branch tip) plus `merged` changes gives `head`."""

    project: str
    connection: str
    branch: str
    base: str  # commit of the branch tip the merges started from
    head: str  # resulting commit, what jobs check out
    # Changes merged onto `base`, in order (their git parents came with them).
    merged: list[ChangeRef] = Field(default_factory=list)


class SpeculativeState(Model):
    """What a buildset tests, per project. `changes` is the merge order across projects."""

    changes: list[ChangeRef] = Field(default_factory=list)
    projects: dict[str, ProjectState] = Field(default_factory=dict)
    # Changes ahead on another branch of a project (a queue spanning branches): merged onto
    # that branch, proven mergeable, not checked out (`projects` holds the branch jobs get).
    other_branches: list[ProjectState] = Field(default_factory=list)
    # Fixed identity and date for the merge commits, so any worker that replays the merges
    # produces the same commits (and can prove it: heads must match).
    merge_date: int = 0

    def changes_key(self) -> str:
        """`NUMBER,PATCHSET` of every change in merge order, space separated (spec: builds)."""
        return " ".join(c.key for c in self.changes)


class PrepareStateRequest(Interned):
    """Build the speculative state for `changes` (merge order; dependencies already first)."""

    changes: list[ChangeRef]
    # Further projects the jobs need at their branch tip (required-projects).
    required_projects: list[str] = Field(default_factory=list)
    merge_date: int


class PrepareStatesRequest(Interned):
    """Several speculative states, each usually the one before plus a change (a row of queue
    items after a reset): prepared one after the other in one activity, so that each merges
    onto the merges of the one before (remembered) instead of all merging every change ahead
    at the same time, and the review system is fetched once."""

    requests: list[PrepareStateRequest]


class PrepareStatesResult(Interned):
    results: list[PrepareStateResult]  # one per request, in order




class PrepareStateResult(Interned):
    ok: bool
    state: SpeculativeState | None = None
    # Set when ok is False: which change did not merge, and git's words.
    conflict_change: ChangeRef | None = None
    error: str | None = None
    # With ok False: no retry can build this state for the last change, whatever the changes
    # ahead of it do (its patchset ref is gone or moved, its branch is gone, the request is
    # unusable); a merge conflict is not permanent (a change ahead may leave).
    permanent: bool = False


class DependencyRequest(Model):
    """Find what `change` needs ahead of it: Depends-On footers, transitively."""

    change: ChangeRef


class NeededChange(Model):
    """A change another one needs ahead of it: its git parent (at the patchset the commit sits
    on) or a change its `Depends-On:` names (at the patchset current when it was read)."""

    project: str
    number: int
    patchset: int
    via: Literal["parent", "depends-on"] = "depends-on"
    url: str | None = None

    @property
    def key(self) -> str:
        return f"{self.number},{self.patchset}"


class DependencyInfo(Model):
    """What the review system says of one change of a dependency closure, when it was read: the
    queue decides from it whether the change may enter and what it must wait for."""

    change: ChangeRef  # the patchset needed (a git parent: the one the commit sits on)
    current_patchset: int
    status: Literal["NEW", "MERGED", "ABANDONED"] = "NEW"
    approvals: dict[str, int] = Field(default_factory=dict)
    wip: bool = False
    private: bool = False
    # The changes this one needs directly (not merged yet), in merge order.
    needs: list[NeededChange] = Field(default_factory=list)

    @property
    def current(self) -> bool:
        return self.change.patchset == self.current_patchset


class DependencyResult(Model):
    ok: bool
    # Changes in merge order, dependencies first, `change` itself last.
    changes: list[ChangeRef] = Field(default_factory=list)
    error: str | None = None  # cycle, unknown project, change not found, ...
    # One per entry of `changes`, in the same order (empty from workers older than this field).
    infos: list[DependencyInfo] = Field(default_factory=list)


class DependentsRequest(Model):
    """Find the open changes that need `changes` (Zuul's enqueueChangesBehind): git children of
    their current patchsets and changes whose Depends-On names them, transitively, each ready
    to enter a queue requiring `require`. `exclude`: `connection:number` of changes already in
    the queue (not looked at again)."""

    changes: list[ChangeRef]
    require: dict[str, int] = Field(default_factory=dict)
    exclude: list[str] = Field(default_factory=list)


class DependentsResult(Model):
    # Depth first, in the order they should enter; each with its own dependencies resolved
    # (the last of its `changes` is the dependent change itself).
    found: list[DependencyResult] = Field(default_factory=list)


PrepareStatesResult.model_rebuild()
