"""Builders and a driver for the gate's pure enqueue and update code (no Temporal, no servers).

`Gate` is the `Sim` of tests/test_gate_queue.py (merges succeed at once, builds are finished by
hand) with the Enqueuer and QueueUpdates on top, every queue check of needed changes switched on
(as the gate workflow runs today), and every report recorded with its message.
"""

from __future__ import annotations

from dataclasses import dataclass

from lockmaster.model.build import Artifact, BuildResult, JobSpec, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.gate import (
    ChangeUpdated,
    DequeueRequest,
    EnqueueRequest,
    FrozenJobs,
    GateItem,
)
from lockmaster.model.state import (
    DependencyInfo,
    DependencyResult,
    NeededChange,
    PrepareStateResult,
)
from lockmaster.pipelines.gate_actions import (
    Action,
    CancelAction,
    ItemLabels,
    ReportItemAction,
    SubmitBatchAction,
)
from lockmaster.pipelines.gate_enqueue import Enqueuer, QueuePolicy
from lockmaster.pipelines.gate_updates import QueueUpdates
from tests.test_gate_queue import JOBS, Sim

PROJECT = "p"
APPROVED = {"Code-Review": 2, "Workflow": 1}
REQUIRE = dict(APPROVED)
START = {"Verified": 0}
SUCCESS = {"Verified": 2}
FAILURE = {"Verified": -2}

__all__ = ["APPROVED", "FAILURE", "JOBS", "PROJECT", "REQUIRE", "START", "SUCCESS", "Gate",
           "Said", "deps", "info", "labels", "need", "ref", "request"]


def ref(number: int, patchset: int = 1, *, project: str = PROJECT,
        branch: str = "master") -> ChangeRef:
    return ChangeRef(connection="c", project=project, branch=branch, number=number,
                     patchset=patchset, url=f"https://review.example.org/{number}")


def need(number: int, patchset: int = 1, *, project: str = PROJECT,
         via: str = "parent") -> NeededChange:
    return NeededChange(project=project, number=number, patchset=patchset,
                        via=via)  # type: ignore[arg-type]


def info(number: int, *needs: int | NeededChange, patchset: int = 1,
         current: int | None = None, approvals: dict[str, int] | None = None,
         status: str = "NEW", wip: bool = False, private: bool = False,
         project: str = PROJECT, branch: str = "master") -> DependencyInfo:
    """What the review system says of a change: approved, open and current unless told."""
    return DependencyInfo(
        change=ref(number, patchset, project=project, branch=branch),
        current_patchset=current if current is not None else patchset,
        status=status,  # type: ignore[arg-type]
        approvals=dict(APPROVED if approvals is None else approvals),
        wip=wip, private=private,
        needs=[n if isinstance(n, NeededChange) else need(n) for n in needs])


def deps(*infos: DependencyInfo) -> DependencyResult:
    """A dependency closure in merge order, the requested change last."""
    return DependencyResult(ok=True, changes=[i.change for i in infos], infos=list(infos))


def request(number: int, patchset: int = 1, *, project: str = PROJECT, branch: str = "master",
            jobs: list[JobSpec] | None = None, trigger: str = "", at: float | None = None,
            exact: bool = False, ignore: bool = False, fail_fast: bool = False,
            other: dict[str, FrozenJobs] | None = None) -> EnqueueRequest:
    return EnqueueRequest(change=ref(number, patchset, project=project, branch=branch),
                          pipeline="gate", jobs=JOBS if jobs is None else jobs,
                          trigger=trigger, trigger_at=at, trigger_exact=exact,
                          ignore_requirements=ignore, fail_fast=fail_fast,
                          other_projects=other or {})


def labels(**extra: object) -> ItemLabels:
    """Sim's reporters (start, success, failure), plus `extra` (enqueue=, dequeue=, ...)."""
    base: dict[str, object] = {"start": START, "success": SUCCESS, "failure": FAILURE}
    base.update(extra)
    return ItemLabels(**base)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Said:
    """One report as the gate would post it."""

    key: str
    action: str
    message: str
    labels: dict[str, int]
    item_id: str


class Gate(Sim):
    """A queue (`q`, pipeline `gate`) of project `p`'s changes. Changes enter through `ask`
    with the jobs their request names (`request`: JOBS unless told); `pass_all` passes JOBS."""

    def __init__(self, *, require: dict[str, int] | None = None, window: int = 20,
                 item_labels: ItemLabels | None = None,
                 projects: tuple[str, ...] = (PROJECT,), branch: str | None = None,
                 dequeue_on_new_patchset: bool = True, needs_checked: bool = True) -> None:
        super().__init__(window=window)
        if item_labels is not None:
            self.queue.labels = item_labels
        self.queue.needs_checked = needs_checked
        self.policy = QueuePolicy(projects=frozenset(projects),
                                  require=dict(REQUIRE if require is None else require),
                                  branch=branch)
        self.enqueuer = Enqueuer(self.queue, self.policy)
        self.updates = QueueUpdates(self.enqueuer,
                                    dequeue_on_new_patchset=dequeue_on_new_patchset)
        self.said: list[Said] = []
        process = self.queue.process

        def recording(now: float) -> list[Action]:
            actions = process(now)
            self._note(actions)
            return actions

        self.queue.process = recording  # type: ignore[method-assign]

    # --- commands ---------------------------------------------------------------------------

    def ask(self, req: EnqueueRequest, result: DependencyResult,
            prepared: tuple[list[ChangeRef], PrepareStateResult] | None = None,
            ) -> list[Action]:
        """A trigger event or an operator asks for the change; its actions are carried out."""
        return self.run(self.enqueuer.request(req, result, 0.0, prepared=prepared))

    def update(self, number: int, patchset: int | None = 1, *, status: str = "NEW",
               approvals: dict[str, int] | None = None, wip: bool = False,
               private: bool = False) -> list[Action]:
        """The review system says the change changed (approved and open unless told)."""
        return self.run(self.updates.change_updated(ChangeUpdated(
            project=PROJECT, number=number, patchset=patchset,
            status=status,  # type: ignore[arg-type]
            approvals=dict(APPROVED if approvals is None else approvals),
            wip=wip, private=private), 0.0))

    def dequeue(self, number: int, *, reason: str = "dequeued by an operator",
                report: bool = True) -> list[Action]:
        return self.run(self.updates.dequeue(DequeueRequest(
            project=PROJECT, number=number, reason=reason, report=report)))

    def run(self, actions: list[Action]) -> list[Action]:
        """Carry out what a command returned (reports recorded, builds cancelled), then let the
        queue process."""
        self._note(actions)
        for action in actions:
            if isinstance(action, CancelAction):
                for build_id in action.build_ids:
                    self.cancelled.append(build_id)
                    key = self.running.pop(build_id)[0]
                    self.queue.build_cancelled(key, build_id)
        self.step()
        return actions

    def finish(self, number: int, job: str, result: Result = Result.SUCCESS,
               artifacts: list[str] | None = None) -> None:
        """As Sim's, carrying out what the result calls for (fail-fast's cancellations);
        the build made the named `artifacts`."""
        for build_id, (key, buildset, action) in list(self.running.items()):
            if key.split(",")[0] == str(number) and action.job.name == job:
                del self.running[build_id]
                made = [Artifact(name=name, url=f"http://logs/{number}/{name}/", job=job,
                                 project="p", change=number, patchset=1)
                        for name in artifacts or []]
                self.run(self.queue.build_done(key, buildset, BuildResult(
                    build_id=build_id, job=job, result=result, started=0, ended=1,
                    artifacts=made)))
                return
        raise AssertionError(f"{job} of {number} is not running: {self.running}")

    # --- what happened ----------------------------------------------------------------------

    def _note(self, actions: list[Action]) -> None:
        for action in actions:
            reports = action.reports if isinstance(action, SubmitBatchAction) else [action]
            for report in reports:
                if isinstance(report, ReportItemAction):
                    self.said.append(Said(report.change.key, report.action, report.message,
                                          dict(report.labels), report.item_id))

    def told(self, number: int) -> list[tuple[str, str]]:
        """(action, message) of every report about the change, in order."""
        return [(s.action, s.message) for s in self.said if s.key.split(",")[0] == str(number)]

    def actions_of(self, number: int) -> list[str]:
        return [action for action, _ in self.told(number)]

    def item(self, number: int) -> GateItem:
        found = self.queue.find_number(number)
        assert found is not None, f"{number} is not in the queue: {self.order()}"
        return found

    def waiting(self) -> list[int]:
        return [w.change.number for w in self.state.waiting]
