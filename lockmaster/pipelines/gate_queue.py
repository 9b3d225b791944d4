"""Zuul's dependent pipeline as a pure, deterministic queue processor.

The gate workflow owns a `QueueState`, feeds every outcome into it (`merge_done`, `build_done`,
`report_done`, `submit_done`, operator commands) and calls `process()`, which changes the state and
returns the actions to carry out. No I/O and no clocks: `now` and new build IDs are passed in.

The rules, as Zuul's:
- Each item is tested on top of every item ahead of it that is not failing, plus itself (its
  `changes`). When that set changes (an item ahead fails, leaves, or is reordered), the item is
  reset: its builds are cancelled and it is merged and built anew.
- Only the first `window` items run jobs.
- An item is failing when its merge conflicted or a voting job did not succeed. It keeps running
  its other jobs; items behind it stop including it.
- An item with no non-failing item ahead reports once all its jobs are done: success is reported
  and submitted; failure is reported and the item leaves. Items depending on a change that failed
  to merge leave with it.
- The window grows on every merge and shrinks (to a floor) on every failure; a submit the review
  system refuses (merge-failure) leaves the window alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lockmaster.model.build import Artifact, BuildResult, JobSpec, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.gate import GateBuild, GateItem, QueueState
from lockmaster.model.report import ReportAction
from lockmaster.model.state import PrepareStateResult
from lockmaster.pipelines import reports
from lockmaster.pipelines.jobgraph import JobGraph, final_result, upstream_jobs

# --- actions the workflow carries out ---------------------------------------------------------


@dataclass(frozen=True)
class MergeAction:
    key: str
    buildset: int
    changes: list[ChangeRef]


@dataclass(frozen=True)
class BuildAction:
    key: str
    buildset: int
    build: GateBuild
    job: JobSpec


@dataclass(frozen=True)
class CancelAction:
    build_ids: list[str]


@dataclass(frozen=True)
class ReportItemAction:
    key: str
    change: ChangeRef
    pipeline: str
    action: ReportAction
    message: str
    labels: dict[str, int]
    # After the report: submit the change (success) or nothing.
    submit: bool = False


@dataclass(frozen=True)
class SubmitBatchAction:
    """Report and submit these successful items one after the other, in this order, stopping at
    the first the review system refuses: each passed on the state of the ones before it plus
    itself, so once those merged it is next in line (the queue's serial path from one merge to
    the next without a round trip through the workflow per change)."""

    reports: list[ReportItemAction]


Action = MergeAction | BuildAction | CancelAction | ReportItemAction | SubmitBatchAction


@dataclass
class ItemLabels:
    start: dict[str, int] | None = None
    success: dict[str, int] = field(default_factory=dict)
    failure: dict[str, int] = field(default_factory=dict)


DEPENDENCY_FAILED = "This change depends on a change that failed to merge."


class GateQueue:
    """Operates on a QueueState in place. `labels` per pipeline come from the workflow input."""

    def __init__(
        self,
        state: QueueState,
        labels: ItemLabels,
        new_id: Callable[[], str],
        *,
        submit_in_batches: bool = False,
    ) -> None:
        self.state = state
        self.labels = labels
        self.new_id = new_id
        # Items right behind a head that succeeded, complete and successful on a state holding
        # it, are submitted with it in one batch (off for histories recorded before batches).
        self.submit_in_batches = submit_in_batches

    MERGED_MEMORY = 500

    @property
    def needs(self) -> dict[str, list[str]]:
        return self.state.needs

    # --- lookups ----------------------------------------------------------------------------

    @property
    def items(self) -> list[GateItem]:
        return self.state.items

    def item(self, key: str) -> GateItem | None:
        return next((i for i in self.items if i.key == key), None)

    def find(self, project: str, number: int) -> GateItem | None:
        return next(
            (i for i in self.items if i.change.project == project and i.change.number == number),
            None,
        )

    @staticmethod
    def failing(item: GateItem) -> bool:
        if item.merge == "conflict":
            return True
        voting = {job.name for job in item.jobs if job.voting}
        return any(
            result is not Result.SUCCESS
            for job, result in item.job_results.items()
            if job in voting
        )

    @staticmethod
    def complete(item: GateItem) -> bool:
        if item.merge == "conflict":
            return True
        return item.merge == "ok" and len(item.job_results) == len(item.jobs)

    def running_builds(self, item: GateItem) -> list[GateBuild]:
        return [b for b in item.builds if b.result is None]

    @property
    def idle(self) -> bool:
        return not self.items

    # --- commands ---------------------------------------------------------------------------

    def enqueue(self, item: GateItem, needs: list[str] | None = None,
                prepared: tuple[list[ChangeRef], PrepareStateResult] | None = None) -> bool:
        """Add at the end. A change already in the queue is not added twice. `prepared`: a
        merge made while the change's dependencies were read, of the changes it was expected
        to be tested on; taken when they are still what it is tested on, and it is within the
        window (else process() asks for the merge as usual)."""
        if self.find(item.change.project, item.change.number) is not None:
            return False
        expected = [*self.tail_changes(), item.change]
        self.items.append(item)
        self.needs[item.key] = list(needs or [])
        if prepared is not None and len(self.items) <= self.state.window:
            changes, result = prepared
            if [c.key for c in changes] == [c.key for c in expected]:
                item.changes = expected
                item.merge = "pending"
                self.merge_done(item.key, item.buildset, result)
        return True

    def tail_changes(self) -> list[ChangeRef]:
        """What a change enqueued now is tested on top of: the changes of the last item that
        is not failing (its own state; items keep theirs current), none merged yet."""
        for item in reversed(self.items):
            if item.outcome is not None or not self.failing(item):
                return self._unmerged(item.changes)
        return []

    def remove(self, item: GateItem) -> list[Action]:
        """Take the item out, cancelling whatever it still runs."""
        actions: list[Action] = []
        running = [b.build_id for b in self.running_builds(item)]
        if running:
            actions.append(CancelAction(running))
        self.items.remove(item)
        self.needs.pop(item.key, None)
        return actions

    def promote(self, keys: list[str]) -> bool:
        """Move these items, in this order, to the head. Returns False when nothing moved."""
        chosen: list[GateItem] = []
        for key in keys:
            number = key.split(",")[0]
            item = next((i for i in self.items if str(i.change.number) == number), None)
            if item is not None and item not in chosen:
                chosen.append(item)
        rest = [i for i in self.items if i not in chosen]
        order = chosen + rest
        if [i.key for i in order] == [i.key for i in self.items]:
            return False
        self.state.items = order
        return True

    # --- outcomes ---------------------------------------------------------------------------

    def merge_done(self, key: str, buildset: int, result: PrepareStateResult) -> None:
        item = self.item(key)
        if item is None or item.buildset != buildset or item.merge != "pending":
            return  # for a state that no longer matters
        if result.ok and result.state is not None:
            item.merge = "ok"
            item.state = result.state
        else:
            item.merge = "conflict"
            item.merge_error = result.error

    def build_done(self, key: str, buildset: int, result: BuildResult) -> None:
        item = self.item(key)
        if item is None or item.buildset != buildset:
            return
        build = next((b for b in item.builds if b.build_id == result.build_id), None)
        if build is None or build.result is not None:
            return
        build.result = result.result
        build.started = result.started
        build.ended = result.ended
        build.log_url = result.log_url
        build.message = result.message
        build.artifacts = list(result.artifacts)
        job = next(j for j in item.jobs if j.name == build.job)
        if result.result is Result.SUCCESS and result.duration is not None:
            self._learn_duration(job.name, result.duration)
        attempts = [b for b in item.builds if b.job == job.name and b.result is not None]
        final, again = final_result(_as_results(attempts), job)
        if again:
            return  # process() starts the next attempt
        graph = self._graph(item)
        graph.finish(job.name, final)
        item.job_results = dict(graph.results)

    def artifacts_for(self, key: str, job: str) -> list[Artifact]:
        """What a build of `job` receives (Zuul's artifacts): those of the successful builds of
        the jobs it depends on (transitively) in this item, and of every successful build of the
        items ahead that its state includes, nearest the head first."""
        item = self.item(key)
        if item is None:
            return []
        out: list[Artifact] = []
        for ahead_ref in item.changes[:-1]:
            ahead = self.item(ahead_ref.key)
            if ahead is not None and ahead is not item:
                out += [a for b in ahead.builds if b.result is Result.SUCCESS
                        for a in b.artifacts]
        wanted = upstream_jobs(item.jobs, job)
        out += [a for b in item.builds if b.result is Result.SUCCESS and b.job in wanted
                for a in b.artifacts]
        return out

    def build_cancelled(self, key: str, build_id: str) -> None:
        item = self.item(key)
        if item is None:
            return
        for build in item.builds:
            if build.build_id == build_id and build.result is None:
                build.result = Result.ABORTED

    def submit_done(self, key: str, ok: bool, error: str | None) -> list[Action]:
        """The review system merged the change (or refused to)."""
        item = self.item(key)
        if item is None:
            return []
        actions = self.remove(item)
        if ok:
            self.state.merged_keys = [*self.state.merged_keys, key][-self.MERGED_MEMORY:]
            self.state.window += self.state.window_increase_amount
            return actions
        item.outcome = "merge-failure"
        message = f"Merge Failed ({item.pipeline}).\n\nThe review system did not merge this change"
        message += f": {error}" if error else "."
        actions.append(ReportItemAction(
            item.key, item.change, item.pipeline, "merge-failure", message, self.labels.failure
        ))
        return actions

    def submit_not_attempted(self, key: str) -> None:
        """A batch stopped before this item (the review system refused one ahead of it): it was
        neither reported nor submitted, and goes back to the queue's rules."""
        item = self.item(key)
        if item is not None and item.outcome == "success":
            item.outcome = None

    def merged_elsewhere(self, project: str, number: int) -> list[Action]:
        """The review system says the change is merged: by our own submit (whose answer may
        arrive after this news) or by someone else. Either way it is in the branch now, so the
        items built on top of it keep their builds."""
        item = self.find(project, number)
        if item is None or item.outcome == "success":
            return []  # unknown here, or our submit: submit_done takes it from here
        actions = self.remove(item)
        self.state.merged_keys = [*self.state.merged_keys, item.key][-self.MERGED_MEMORY:]
        return actions

    # --- the processing loop ----------------------------------------------------------------

    def process(self, now: float) -> list[Action]:
        """Bring every item up to date; returns what to do. Call after every change."""
        actions: list[Action] = []
        batch: list[ReportItemAction] = []
        changed = True
        while changed:  # a removal changes everything behind it: go again from the head
            changed = False
            ahead: list[ChangeRef] = []
            batch_open = False  # the items just ahead were all finished now, with success
            for index, item in enumerate(list(self.items)):
                if item.outcome is not None:
                    # Reported success, being submitted: still ahead of everything behind it.
                    ahead = self._unmerged(item.changes)
                    batch_open = False
                    continue
                expected = [*ahead, item.change]
                if [c.key for c in expected] != [c.key for c in self._unmerged(item.changes)]:
                    actions += self._reset(item, expected)
                active = index < self.state.window
                if active:
                    actions += self._advance(item)
                head_of_chain = not ahead
                follows_batch = batch_open and self._succeeded(item)
                if (head_of_chain or follows_batch) and self.complete(item):
                    finished = self._finish(item)
                    if item not in self.items:
                        actions += finished
                        changed = True
                        break
                    # Reported success, to be submitted: still ahead of everything behind it.
                    ahead = expected
                    if not self.submit_in_batches:
                        actions += finished  # (in this order: recorded histories replay)
                        continue
                    submits = [a for a in finished
                               if isinstance(a, ReportItemAction) and a.submit]
                    actions += [a for a in finished if a not in submits]
                    batch += submits
                    batch_open = bool(submits)
                    continue
                batch_open = False
                if not self.failing(item):
                    ahead = expected
        return actions + self._submits(batch)

    def _succeeded(self, item: GateItem) -> bool:
        return (item.merge == "ok" and self.complete(item) and not self.failing(item)
                and self._graph(item).succeeded())

    @staticmethod
    def _submits(batch: list[ReportItemAction]) -> list[Action]:
        """One batch for the chain of successes at the head; a single item as before."""
        return [SubmitBatchAction(batch)] if len(batch) > 1 else list(batch)

    # --- internals ---

    def _unmerged(self, changes: list[ChangeRef]) -> list[ChangeRef]:
        merged = set(self.state.merged_keys)
        return [c for c in changes if c.key not in merged]

    # ---

    def _reset(self, item: GateItem, changes: list[ChangeRef]) -> list[Action]:
        actions: list[Action] = []
        running = [b.build_id for b in self.running_builds(item)]
        if running:
            actions.append(CancelAction(running))
        item.changes = changes
        item.buildset += 1
        item.merge = "none"
        item.merge_error = None
        item.state = None
        item.builds = []
        item.job_results = {}
        return actions

    def _advance(self, item: GateItem) -> list[Action]:
        if item.merge == "none":
            # Changes that merged while this item waited are in the branch tip now.
            item.changes = self._unmerged(item.changes)
            item.merge = "pending"
            return [MergeAction(item.key, item.buildset, list(item.changes))]
        if item.merge != "ok":
            return []
        actions: list[Action] = []
        if not item.started_reported and self.labels.start is not None:
            item.started_reported = True
            actions.append(ReportItemAction(
                item.key, item.change, item.pipeline, "start",
                f"Starting {item.pipeline} jobs.", self.labels.start,
            ))
        graph = self._graph(item)
        actions += self._abort_stopped(item, graph)
        changes_key = " ".join(c.key for c in item.changes)
        for job in graph.ready():
            attempt = len([b for b in item.builds if b.job == job.name]) + 1
            build = GateBuild(build_id=self.new_id(), job=job.name, attempt=attempt,
                              changes=changes_key)
            item.builds.append(build)
            actions.append(BuildAction(item.key, item.buildset, build, job))
        return actions

    def _abort_stopped(self, item: GateItem, graph: JobGraph) -> list[Action]:
        """Running builds of jobs `aborted-by` a job that failed: cancelled, and ABORTED."""
        failed = {name for name, result in graph.results.items() if result is not Result.SUCCESS}
        specs = {j.name: j for j in item.jobs}
        stopped = []
        for build in self.running_builds(item):
            spec = specs.get(build.job)
            cause = next((j for j in spec.aborted_by if j in failed), None) if spec else None
            if cause is None:
                continue
            build.result = Result.ABORTED
            build.message = f"aborted: {cause} failed"
            graph.running.discard(build.job)
            graph.finish(build.job, Result.ABORTED)
            stopped.append(build.build_id)
        if not stopped:
            return []
        item.job_results = dict(graph.results)
        return [CancelAction(stopped)]

    def _finish(self, item: GateItem) -> list[Action]:
        """Report a complete item at the head of its chain."""
        actions: list[Action] = []
        if item.merge == "conflict":
            item.outcome = "merge-conflict"
            actions += self.remove(item)
            actions.append(ReportItemAction(
                item.key, item.change, item.pipeline, "merge-conflict",
                reports.merge_conflict_report(item.pipeline, item.merge_error), self.labels.failure,
            ))
            actions += self._dequeue_dependents(item)
            self._shrink_window()
            return actions
        graph = self._graph(item)
        last = {}
        for build in item.builds:
            if build.result is not None:
                last[build.job] = _as_result(build)
        succeeded = graph.succeeded()
        message = reports.buildset_report(item.pipeline, succeeded, item.jobs, item.job_results,
                                          last)
        if succeeded:
            item.outcome = "success"
            actions.append(ReportItemAction(
                item.key, item.change, item.pipeline, "success", message, self.labels.success,
                submit=True,
            ))
            return actions
        item.outcome = "failure"
        actions += self.remove(item)
        actions.append(ReportItemAction(
            item.key, item.change, item.pipeline, "failure", message, self.labels.failure,
        ))
        actions += self._dequeue_dependents(item)
        self._shrink_window()
        return actions

    def _dequeue_dependents(self, failed: GateItem) -> list[Action]:
        actions: list[Action] = []
        gone = {failed.key}
        grew = True
        while grew:
            grew = False
            for other in list(self.items):
                if other.outcome is None and gone & set(self.needs.get(other.key, [])):
                    other.outcome = "dependency-failed"
                    gone.add(other.key)
                    actions += self.remove(other)
                    actions.append(ReportItemAction(
                        other.key, other.change, other.pipeline, "failure",
                        f"Build failed ({other.pipeline}).\n\n{DEPENDENCY_FAILED}",
                        self.labels.failure,
                    ))
                    grew = True
        return actions

    def _learn_duration(self, job: str, seconds: float) -> None:
        known = self.state.job_seconds.get(job)
        self.state.job_seconds[job] = seconds if known is None else 0.7 * known + 0.3 * seconds

    def _shrink_window(self) -> None:
        state = self.state
        state.window = max(state.window_floor, state.window // state.window_decrease_factor)

    def _graph(self, item: GateItem) -> JobGraph:
        """The item's job graph rebuilt from its builds (the state is plain data)."""
        graph = JobGraph(item.jobs)
        for name, result in item.job_results.items():
            graph.results[name] = result
        for build in item.builds:
            if build.result is None and build.job not in graph.results:
                graph.running.add(build.job)
        # A job whose last attempt asked for a retry is neither running nor finished: ready again.
        return graph


def _as_result(build: GateBuild) -> BuildResult:
    return BuildResult(
        build_id=build.build_id, job=build.job, result=build.result or Result.ABORTED,
        attempt=build.attempt, log_url=build.log_url, started=build.started, ended=build.ended,
        message=build.message,
    )


def _as_results(builds: list[GateBuild]) -> list[BuildResult]:
    return [_as_result(b) for b in builds]
