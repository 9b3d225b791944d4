"""Which changes enter a shared queue, and when: Zuul's addChange, enqueueChangesAhead and
enqueueChangesBehind, as pure code over the queue's state.

The gate workflow reads a change's dependencies (`resolve_dependencies`: every change of the
closure with its current patchset, status, approvals, WIP and private flags, and what each
needs) and hands them here with the request. Then, as Zuul does for every trigger event:

- a change that is not open, not its current patchset, a work in progress, private, or (unless an
  operator enqueues it) short of the pipeline's requirements does not enter, nor does one this
  queue merged while its state was read (an operator enqueue, too: it never spins the queue);
- a needed change in another queue, a dependency cycle or an unknown change: a configuration
  error is reported;
- a needed change that is not its current patchset (a stack built on an outdated patchset):
  reported, the change does not enter (it must be rebased);
- needed changes that meet the requirements enter first, in dependency order, then the change;
- a needed change that does not meet them yet: the change waits, unreported; when that change
  enters (or merges), the waiting ones enter right behind it, before anything later;
- changes found needing those that entered (`find_dependents`, asked by the workflow) enter
  behind them when they can, silently (`behind=True`): nothing is reported or remembered for
  one that cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

from lockmaster.model.audit import OperatorNote, note_of
from lockmaster.model.change import ChangeRef
from lockmaster.model.gate import EnqueueRequest, FrozenJobs, GateItem, QueueState
from lockmaster.model.state import (
    DependencyInfo,
    DependencyResult,
    DependentsRequest,
    DependentsResult,
    NeededChange,
    PrepareStateResult,
)
from lockmaster.pipelines import gate_window, reports
from lockmaster.pipelines.duplicates import same_time
from lockmaster.pipelines.gate_actions import Action, ReportItemAction
from lockmaster.pipelines.gate_queue import GateQueue


@dataclass(frozen=True)
class QueuePolicy:
    """What a queue admits: its projects (and branch, for a per-branch queue) and the
    pipeline's requirements."""

    projects: frozenset[str]
    require: dict[str, int]
    branch: str | None = None
    # Every project of the layout (None: not known, from a queue started before it was sent).
    known: frozenset[str] | None = None

    def holds(self, change: ChangeRef) -> bool:
        return change.project in self.projects and self.branch in (None, change.branch)


def unmet_requirements(require: dict[str, int], approvals: dict[str, int]) -> list[str]:
    """The labels below the pipeline's minimum, e.g. ["Workflow 0 (needs +1)"]."""
    return [f"{label} {approvals.get(label, 0):+d} (needs {minimum:+d})"
            .replace("+0 (", "0 (")
            for label, minimum in require.items() if approvals.get(label, 0) < minimum]


def not_ready(info: DependencyInfo, require: dict[str, int], *,
              ignore_requirements: bool = False) -> str | None:
    """Why the change cannot enter the queue now (None: it can): Zuul's canMerge and the
    pipeline's requirements."""
    if info.status != "NEW":
        return f"it is {info.status.lower()}"
    if not info.current:
        return (f"it is not the current patchset (patchset {info.current_patchset} is)")
    if info.wip:
        return "it is a work in progress"
    if info.private:
        return "it is private"
    unmet = [] if ignore_requirements else unmet_requirements(require, info.approvals)
    if unmet:
        return "it does not meet the pipeline's requirements: " + ", ".join(unmet)
    return None


def legacy_infos(deps: DependencyResult) -> list[DependencyInfo]:
    """A worker older than `infos` answered: every needed change is taken as current and not
    known to be approved (it must be in the queue already, or the change waits), as before."""
    out = []
    for index, change in enumerate(deps.changes):
        needs = [NeededChange(project=c.project, number=c.number, patchset=c.patchset)
                 for c in deps.changes[:index]] if index == len(deps.changes) - 1 else []
        out.append(DependencyInfo(change=change, current_patchset=change.patchset, needs=needs))
    return out


def operator_note(request: EnqueueRequest, now: float) -> OperatorNote | None:
    """Who asked for the change, and why, when an operator did (`lockmaster gate enqueue`):
    forced, when it was let in without the pipeline's requirements."""
    return note_of(request.by, request.reason, now, forced=request.ignore_requirements)


TRIGGER_MEMORY = 200


class Enqueuer:
    """Enqueue decisions for one queue (GateQueue state, the pipeline's policy)."""

    def __init__(self, queue: GateQueue, policy: QueuePolicy) -> None:
        self.queue = queue
        self.policy = policy

    @property
    def state(self) -> QueueState:
        return self.queue.state

    def duplicate(self, request: EnqueueRequest) -> bool:
        """Is this the event that asked for the change before, delivered again (same event,
        same time)? Remembers the event otherwise."""
        if not request.trigger or request.trigger_at is None:
            return False
        triggers = self.state.triggers
        seen = triggers.get(request.trigger)
        if seen is not None and same_time(seen[0], seen[1], request.trigger_at,
                                          request.trigger_exact):
            return True
        triggers.pop(request.trigger, None)
        triggers[request.trigger] = (request.trigger_at, request.trigger_exact)
        while len(triggers) > TRIGGER_MEMORY:
            triggers.pop(next(iter(triggers)))
        return False

    # --- what to look up while a change arrives (the workflow asks, then hands back) ---------

    def premerge(self, request: EnqueueRequest) -> list[ChangeRef] | None:
        """The changes to merge while the change's dependencies are read: the queue's tail and
        the change, what it will most likely be tested on (the usual case, a change needing
        nothing outside the queue, then starts its jobs one merger round trip sooner). None
        when it would not start jobs at once anyway (the window is full)."""
        if not gate_window.is_active(self.state, len(self.queue.items)):
            return None
        return [*self.queue.tail_changes(), request.change]

    def dependents_request(self, entered: list[ChangeRef]) -> DependentsRequest:
        """Ask for the open changes needing those that just entered (Zuul's
        enqueueChangesBehind), leaving out the changes already in the queue."""
        return DependentsRequest(changes=entered, require=dict(self.policy.require),
                                 exclude=[f"{i.change.connection}:{i.change.number}"
                                          for i in self.queue.items])

    def followers(self, request: EnqueueRequest, found: DependentsResult
                  ) -> list[tuple[EnqueueRequest, DependencyResult]]:
        """The enqueue requests for the changes found needing `request`'s: each with the
        frozen job graph of its project as `request` carried it (a project it carries none
        for is not this queue's: left out), to enter behind (`request(..., behind=True)`)."""
        graphs = {**request.other_projects,
                  request.change.project: FrozenJobs(jobs=request.jobs,
                                                     fail_fast=request.fail_fast)}
        out = []
        for deps in found.found:
            change = deps.changes[-1]
            if change.project not in graphs:
                continue
            frozen = graphs[change.project]
            out.append((EnqueueRequest(
                change=change, pipeline=request.pipeline, jobs=frozen.jobs,
                fail_fast=frozen.fail_fast, trigger=f"needs {request.change.key}",
                other_projects={p: g for p, g in graphs.items() if p != change.project}), deps))
        return out

    # --- deciding -------------------------------------------------------------------------------

    def request(self, request: EnqueueRequest, deps: DependencyResult, now: float,
                prepared: tuple[list[ChangeRef], PrepareStateResult] | None = None,
                *, behind: bool = False) -> list[Action]:
        """A trigger event or an operator asks for the change: what enters, waits, or is
        refused with a report. `behind`: the change was found needing one that just entered
        (Zuul's enqueueChangesBehind): it enters if it can now, silently does nothing if not."""
        queue = self.queue
        change = request.change
        if queue.find_number(change.number) is not None:
            return []  # in the queue already (Zuul: already in pipeline)
        if queue.unbuildable_leave and queue.merged(change.key):
            return []  # this queue merged it while the request read it: nothing to test
        if behind and not self._can_follow(deps):
            return []
        if not deps.ok:
            return [self._report_new(request.change, request.pipeline, "config-error",
                                     reports.dependency_error_report(request.pipeline,
                                                                     deps.error or "unknown"))]
        infos = deps.infos or legacy_infos(deps)
        own = infos[-1]
        if deps.infos and not_ready(own, self.policy.require,
                                    ignore_requirements=request.ignore_requirements) is not None:
            return []  # Zuul: not enqueued, silently (the review system shows why)
        # A needed change the queue merged while its dependencies were read is on the branch.
        needed = [i for i in infos[:-1] if not queue.merged(i.change.key)]
        foreign = [i for i in needed if not self.policy.holds(i.change)]
        if foreign:
            return [self._report_new(change, request.pipeline, "config-error",
                                     self._foreign_report(request.pipeline, foreign))]
        for info in needed:
            if not info.current:
                return [self._report_new(change, request.pipeline, "failure",
                                         reports.needed_change_report(
                                             request.pipeline, info.change.key,
                                             f"it is not the current patchset (patchset "
                                             f"{info.current_patchset} is); rebase this change "
                                             "onto it", info.change.url))]
        to_add: list[DependencyInfo] = []
        waits = False
        for info in needed:
            present = queue.find_number(info.change.number)
            if present is not None and present.change.patchset == info.change.patchset:
                continue
            if present is None and not_ready(
                    info, self.policy.require,
                    ignore_requirements=request.ignore_requirements) is None:
                to_add.append(info)
            else:
                waits = True  # not approved yet, or an older patchset still leaving the queue
        if waits:
            if not behind:
                self._wait(request, needed, own)
            return []
        self._forget_waiting(change.number)
        actions: list[Action] = []
        for info in to_add:
            actions += self._add(request, info, now)
        actions += self._add(request, own, now, prepared=prepared)
        return actions

    def _foreign_report(self, pipeline: str, foreign: list[DependencyInfo]) -> str:
        """Needed changes this queue cannot hold: another queue's, or a project the layout
        does not have (Zuul's test_crd_gate_unknown), said as such."""
        known = self.policy.known
        unknown = [i for i in foreign if known is not None and i.change.project not in known]
        other = [i for i in foreign if i not in unknown]
        lines = []
        if other:
            names = ", ".join(f"{i.change.project} {i.change.key}" for i in other)
            lines.append(f"This change depends on {names}, which is not in this change's queue "
                         f"({self.state.queue}); it cannot be gated with it.")
        if unknown:
            names = ", ".join(f"{i.change.project} {i.change.key}" for i in unknown)
            lines.append(f"This change depends on {names}, in a project lockmaster does not "
                         "gate; it can enter once that change has merged (or its project is "
                         "added to the layout).")
        return f"Configuration error ({pipeline}).\n\n" + "\n".join(lines)

    def _can_follow(self, deps: DependencyResult) -> bool:
        """A change found behind enters only when nothing about it would be reported: it
        resolves, its queue is this one, everything it needs is current."""
        return deps.ok and bool(deps.infos) and all(
            self.policy.holds(i.change) and i.current for i in deps.infos)

    # --- entering -----------------------------------------------------------------------------

    def _add(self, request: EnqueueRequest, info: DependencyInfo, now: float,
             prepared: tuple[list[ChangeRef], PrepareStateResult] | None = None) -> list[Action]:
        frozen = self._jobs_for(request, info.change)
        item = GateItem(id=self.queue.new_id(), change=info.change, pipeline=request.pipeline,
                        jobs=frozen.jobs, enqueued_at=now, fail_fast=frozen.fail_fast,
                        ignore_requirements=request.ignore_requirements,
                        enqueued_by=operator_note(request, now))
        needs = [n.key for n in info.needs if not self.queue.merged(n.key)]
        return self._enter(item, needs, now, prepared)

    def _enter(self, item: GateItem, needs: list[str], now: float,
               prepared: tuple[list[ChangeRef], PrepareStateResult] | None = None
               ) -> list[Action]:
        if not self.queue.enqueue(item, needs, prepared=prepared):
            return []
        actions: list[Action] = []
        labels = self.queue.labels
        if labels.enqueue is not None:
            actions.append(ReportItemAction(
                item.key, item.change, item.pipeline, "enqueue",
                reports.with_operator(reports.enqueue_report(
                    item.pipeline, labels.messages.get("enqueue"),
                    reports.status_link(labels.status_url, item.change.number)),
                    item.enqueued_by),
                labels.enqueue, item_id=item.id))
        return actions + self.release_waiting(now, item.change.number)

    def release_waiting(self, now: float, number: int | None = None) -> list[Action]:
        """Waiting changes whose needed changes are all merged or in the queue now enter, right
        behind (depth first, as Zuul's enqueueChangesBehind): `number` entered or merged."""
        actions: list[Action] = []
        for waiting in list(self.state.waiting):
            if waiting not in self.state.waiting:
                continue  # entered meanwhile (released by a deeper call)
            if number is not None and all(n.number != number for n in waiting.needed):
                continue
            needs = self._needs_met(waiting)
            if needs is None:
                continue
            self.state.waiting.remove(waiting)
            if self.queue.find_number(waiting.change.number) is not None:
                continue
            frozen = FrozenJobs(jobs=waiting.jobs, fail_fast=waiting.fail_fast)
            item = GateItem(id=self.queue.new_id(), change=waiting.change,
                            pipeline=waiting.pipeline, jobs=frozen.jobs,
                            enqueued_at=now, fail_fast=frozen.fail_fast,
                            ignore_requirements=waiting.ignore_requirements,
                            enqueued_by=operator_note(waiting, now))
            actions += self._enter(item, needs, now)
        return actions

    def _needs_met(self, waiting: EnqueueRequest) -> list[str] | None:
        """The keys a waiting change needs in the queue, or None while one is missing."""
        keys = []
        for need in waiting.needed:
            if self.queue.merged(need.key):
                continue
            present = self.queue.find_number(need.number)
            if present is None or present.outcome not in (None, "success"):
                return None
            if need.via == "parent" and present.change.patchset != need.patchset:
                return None
            keys.append(present.key)
        return keys

    # --- waiting --------------------------------------------------------------------------------

    def _wait(self, request: EnqueueRequest, needed: list[DependencyInfo],
              own: DependencyInfo) -> None:
        """Remember the change until what it needs enters; needed on a patchset (a git parent)
        or as a change (Depends-On: whichever patchset enters)."""
        parents = {n.number for i in [*needed, own] for n in i.needs if n.via == "parent"}
        wanted = [NeededChange(project=i.change.project, number=i.change.number,
                               patchset=i.change.patchset,
                               via="parent" if i.change.number in parents else "depends-on",
                               url=i.change.url)
                  for i in needed if not self.queue.merged(i.change.key)]
        entry = request.model_copy(update={"needed": wanted,
                                           "needs": [i.change.key for i in needed]})
        self._forget_waiting(request.change.number)
        self.state.waiting.append(entry)

    def _forget_waiting(self, number: int) -> None:
        self.state.waiting = [w for w in self.state.waiting if w.change.number != number]

    # --- helpers --------------------------------------------------------------------------------

    def _jobs_for(self, request: EnqueueRequest, change: ChangeRef) -> FrozenJobs:
        if change.project == request.change.project:
            return FrozenJobs(jobs=request.jobs, fail_fast=request.fail_fast)
        return request.other_projects.get(change.project, FrozenJobs())

    def _report_new(self, change: ChangeRef, pipeline: str, action: str,
                    message: str) -> ReportItemAction:
        """A report about a change that did not enter (a fresh id: each refusal is reported)."""
        return ReportItemAction(change.key, change, pipeline, action,  # type: ignore[arg-type]
                                message, self.queue.labels.failure, item_id=self.queue.new_id())
