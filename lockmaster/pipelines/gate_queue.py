"""Zuul's dependent pipeline as a pure, deterministic queue processor.

The gate workflow owns a `QueueState`, feeds every outcome into it (`merge_done`, `build_done`,
`submit_done`, the changes and commands of `gate_enqueue` and `gate_updates`) and calls
`process()`, which changes the state and returns the actions to carry out. No I/O and no clocks:
`now` and new build IDs are passed in.

The rules, as Zuul's:
- Each item is tested on top of every item ahead of it that is not failing, plus itself (its
  `changes`). When that set changes (an item ahead fails, leaves, or is reordered), the item is
  reset: its builds are cancelled and it is merged and built anew.
- Only the first `window` items run jobs (gate_window.py).
- An item is failing when its merge conflicted, a voting job did not succeed, or a change it needs
  is failing (then it runs nothing: it cannot merge without that change). It keeps running its
  other jobs otherwise; items behind it stop including it. With fail-fast, a failing voting job
  cancels the item's other builds at once.
- Every change an item needs (git parent, Depends-On) must be merged or ahead of it in the queue;
  when one leaves without merging (failed, dequeued, a new patchset, abandoned...), the item
  leaves too, with a report naming that change and why.
- An item with no non-failing item ahead reports once all its jobs are done: success is reported
  and submitted; failure is reported and the item leaves.
- Jobs marked hold-following-changes keep the items behind from starting builds until they
  succeeded on the item ahead.
"""

from __future__ import annotations

from collections.abc import Callable

from lockmaster.model.audit import OperatorNote
from lockmaster.model.build import Artifact, BuildResult, JobSpec, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.gate import GateBuild, GateItem, QueueState
from lockmaster.model.state import PrepareStateResult
from lockmaster.pipelines import gate_commands, gate_lookups, gate_merges, gate_window, reports
from lockmaster.pipelines.gate_actions import (
    Action,
    BuildAction,
    CancelAction,
    ItemLabels,
    MergeAction,
    ReportItemAction,
    SubmitBatchAction,
)
from lockmaster.pipelines.jobgraph import JobGraph, final_result, waits_for_providers

__all__ = [
    "DEPENDENCY_FAILED",
    "Action",
    "BuildAction",
    "CancelAction",
    "GateQueue",
    "ItemLabels",
    "MergeAction",
    "ReportItemAction",
    "SubmitBatchAction",
]

DEPENDENCY_FAILED = reports.DEPENDENCY_FAILED
LEFT_MEMORY = 200  # why recent changes left (for the reports of the changes needing them)
FAILED_DEPENDENCY = "it depends on a change that failed to merge"


class GateQueue:
    """Operates on a QueueState in place. `labels` per pipeline come from the workflow input."""

    def __init__(
        self,
        state: QueueState,
        labels: ItemLabels,
        new_id: Callable[[], str],
        *,
        submit_in_batches: bool = False,
        needs_checked: bool = False,
        unbuildable_leave: bool = True,
    ) -> None:
        self.state = state
        self.labels = labels
        self.new_id = new_id
        # Items right behind a head that succeeded, complete and successful on a state holding
        # it, are submitted with it in one batch (off for histories recorded before batches).
        self.submit_in_batches = submit_in_batches
        # Every item's needed changes are checked on each pass, as Zuul does (off for histories
        # recorded before: those only removed the dependents of a failed change).
        self.needs_checked = needs_checked
        # An item whose state can never be built leaves at once (gate_merges.py; off for
        # histories recorded before, where such an item was merged again and again).
        self.unbuildable_leave = unbuildable_leave
        self._merged_cache: tuple[list[str], int, gate_lookups.MergedKeys] | None = None

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

    def find_number(self, number: int) -> GateItem | None:
        return next((i for i in self.items if i.change.number == number), None)

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

    def merged(self, key: str) -> bool:
        return key in self._merged_set()

    def _merged_set(self) -> gate_lookups.MergedKeys:
        """`merged_keys` as a set, made again only when the list changed (`_merged` replaces
        the list, nothing edits it in place): every pass looks each item's changes up in it."""
        keys = self.state.merged_keys
        cached = self._merged_cache
        if cached is None or cached[0] is not keys or cached[1] != len(keys):
            cached = self._merged_cache = (keys, len(keys), gate_lookups.MergedKeys(keys))
        return cached[2]

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
        if prepared is not None and gate_window.is_active(self.state, len(self.items) - 1):
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

    def leave(self, item: GateItem, why: str) -> list[Action]:
        """Take the item out without merging it, remembering why (the changes that need it are
        told when they leave in turn)."""
        self.state.left[item.key] = why
        while len(self.state.left) > LEFT_MEMORY:
            self.state.left.pop(next(iter(self.state.left)))
        return self.remove(item)

    def promote(self, keys: list[str], note: OperatorNote | None = None) -> bool:
        """Move these items, in this order, to the head (each behind the changes it needs, as
        Zuul re-enqueues the changes ahead of a promoted one), `note`: who asked and why.
        Returns False when nothing moved."""
        order = gate_commands.promoted_order(self, keys)
        if [i.key for i in order] == [i.key for i in self.items]:
            return False
        self.state.items = order
        gate_commands.record_promotion(self, keys, note)
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
            item.unmergeable = result.permanent

    def build_done(self, key: str, buildset: int, result: BuildResult) -> list[Action]:
        """Record a build's result; returns the cancellations fail-fast calls for."""
        item = self.item(key)
        if item is None or item.buildset != buildset:
            return []
        build = next((b for b in item.builds if b.build_id == result.build_id), None)
        if build is None or build.result is not None:
            return []
        build.result = result.result
        build.started = result.started
        build.ended = result.ended
        build.log_url = result.log_url
        build.message = result.message
        build.artifacts = list(result.artifacts)
        build.known_failures = list(result.known_failures)
        job = next(j for j in item.jobs if j.name == build.job)
        if result.result is Result.SUCCESS and result.duration is not None:
            self._learn_duration(job.name, result.duration)
        attempts = [b for b in item.builds if b.job == job.name and b.result is not None]
        final, again = final_result(_as_results(attempts), job)
        if again:
            return []  # process() starts the next attempt
        if final is Result.RETRY_LIMIT:
            build.result = Result.RETRY_LIMIT  # the last attempt is recorded as what it ended in
        graph = self._graph(item)
        graph.finish(job.name, final)
        item.job_results = dict(graph.results)
        if item.fail_fast and job.voting and final is not Result.SUCCESS:
            return self._stop_item(item, f"{job.name} failed (fail-fast)")
        return []

    def _stop_item(self, item: GateItem, why: str) -> list[Action]:
        """Fail-fast: the item's result is known; cancel what runs, skip what has not started."""
        graph = self._graph(item)
        stopped = []
        for build in self.running_builds(item):
            build.result = Result.ABORTED
            build.message = f"aborted: {why}"
            graph.running.discard(build.job)
            graph.finish(build.job, Result.ABORTED)
            stopped.append(build.build_id)
        for job in item.jobs:
            if job.name not in graph.results:
                graph.results[job.name] = Result.SKIPPED
        item.job_results = dict(graph.results)
        return [CancelAction(stopped)] if stopped else []

    def artifacts_for(self, key: str, job: str) -> list[Artifact]:
        """What a build of `job` receives (gate_lookups.artifacts_for)."""
        return gate_lookups.artifacts_for(self, key, job)

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
        if ok:
            actions = self.remove(item)
            self._merged(item.key)
            gate_window.grow(self.state)
            return actions
        actions = self.leave(item, "the review system did not merge it")
        item.outcome = "merge-failure"
        message = f"Merge Failed ({item.pipeline}).\n\nThe review system did not merge this change"
        message += f": {error}" if error else "."
        actions.append(self._report(item, "merge-failure", message, self.labels.failure))
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
        self._merged(item.key)
        return actions

    def _merged(self, key: str) -> None:
        self.state.merged_keys = [*self.state.merged_keys, key][-self.MERGED_MEMORY:]
        # Needs on it are met for good (the memory of merged keys is bounded).
        for other, needs in self.needs.items():
            if key in needs:
                self.needs[other] = [n for n in needs if n != key]

    # --- the processing loop ----------------------------------------------------------------

    def process(self, now: float) -> list[Action]:
        """Bring every item up to date; returns what to do. Call after every change."""
        actions: list[Action] = []
        batch: list[ReportItemAction] = []
        changed = True
        while changed:  # a removal changes everything behind it: go again from the head
            changed = False
            ahead: list[ChangeRef] = []
            seen: set[str] = set()  # keys of the items ahead
            failing_keys: set[str] = set()  # ... of those that are failing
            holding = False  # an item in the chain ahead holds the following changes
            batch_open = False  # the items just ahead were all finished now, with success
            for index, item in enumerate(list(self.items)):
                if item.outcome is not None:
                    # Reported success, being submitted: still ahead of everything behind it.
                    ahead = self._unmerged(item.changes)
                    seen.add(item.key)
                    batch_open = False
                    continue
                gone = gate_merges.leave_if_unbuildable(self, item) \
                    if self.unbuildable_leave else None
                if gone is not None:
                    actions += gone
                    changed = True
                    break
                if self.needs_checked:
                    missing = self._missing_need(item, seen)
                    if missing is not None:
                        actions += self._needed_change_left(item, missing)
                        changed = True
                        break
                    if any(k in failing_keys for k in self.needs.get(item.key, [])):
                        # A change it needs is failing: it cannot merge; it waits, running
                        # nothing, to leave with that change (Zuul's failing dependent items).
                        actions += self._cancel_running(item)
                        seen.add(item.key)
                        failing_keys.add(item.key)
                        batch_open = False
                        continue
                seen.add(item.key)
                expected = [*ahead, item.change]
                if not gate_lookups.same_changes(expected, self._unmerged(item.changes)):
                    actions += self._reset(item, expected)
                if gate_window.is_active(self.state, index):
                    actions += self._advance(item, holding)
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
                if self.failing(item):
                    failing_keys.add(item.key)
                else:
                    ahead = expected
                    holding = holding or self._holds(item)
        return actions + self._submits(batch)

    def _missing_need(self, item: GateItem, ahead: set[str]) -> str | None:
        """A change the item needs that is neither merged nor ahead of it, if any."""
        for need in self.needs.get(item.key, []):
            if need not in ahead and not self.merged(need):
                return need
        return None

    def _needed_change_left(self, item: GateItem, need: str) -> list[Action]:
        why = self.state.left.get(need, "it is not in the queue ahead of this change")
        item.outcome = "dependency-failed"
        # Down a stack, every report names the change that caused it all (e.g. the outdated
        # patchset at the bottom), not only the direct parent.
        chained = f"{FAILED_DEPENDENCY} ("
        cause = why[len(chained):-1] if why.startswith(chained) else f"change {need}: {why}"
        actions = self.leave(item, f"{chained}{cause})")
        actions.append(self._report(
            item, "failure", reports.needed_change_report(item.pipeline, need, why),
            self.labels.failure))
        return actions

    def _cancel_running(self, item: GateItem) -> list[Action]:
        running = self.running_builds(item)
        for build in running:
            build.result = Result.ABORTED
            build.message = "aborted: a change it needs is failing"
        return [CancelAction([b.build_id for b in running])] if running else []

    def _holds(self, item: GateItem) -> bool:
        """Zuul's hold-following-changes: a hold job of the item has not succeeded (yet)."""
        return any(job.hold_following_changes
                   and item.job_results.get(job.name) is not Result.SUCCESS
                   for job in item.jobs)

    def _succeeded(self, item: GateItem) -> bool:
        return (item.merge == "ok" and self.complete(item) and not self.failing(item)
                and self._graph(item).succeeded())

    @staticmethod
    def _submits(batch: list[ReportItemAction]) -> list[Action]:
        """One batch for the chain of successes at the head; a single item as before."""
        return [SubmitBatchAction(batch)] if len(batch) > 1 else list(batch)

    # --- internals ---

    def _unmerged(self, changes: list[ChangeRef]) -> list[ChangeRef]:
        return self._merged_set().unmerged(changes)

    def _report(self, item: GateItem, action: str, message: str, labels: dict[str, int],
                submit: bool = False) -> ReportItemAction:
        return ReportItemAction(item.key, item.change, item.pipeline, action,  # type: ignore[arg-type]
                                reports.with_operator(message, item.enqueued_by), labels,
                                submit=submit, item_id=item.id)

    def _reset(self, item: GateItem, changes: list[ChangeRef]) -> list[Action]:
        actions: list[Action] = []
        running = [b.build_id for b in self.running_builds(item)]
        if running:
            actions.append(CancelAction(running))
        item.changes = changes
        item.buildset += 1
        item.merge = "none"
        item.merge_error = None
        item.unmergeable = False
        item.state = None
        item.builds = []
        item.job_results = {}
        return actions

    def _advance(self, item: GateItem, held: bool = False) -> list[Action]:
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
            actions.append(self._report(item, "start", reports.start_report(
                item.pipeline, self.labels.messages.get("start"),
                reports.status_link(self.labels.status_url, item.change.number)),
                self.labels.start))
        graph = self._graph(item)
        actions += self._abort_stopped(item, graph)
        if held:
            return actions  # an item ahead holds the following changes
        changes_key = " ".join(c.key for c in item.changes)
        ahead: list[tuple[list[JobSpec], dict[str, Result]]] | None = None
        for job in graph.ready():
            if job.requires:  # (only then do the items ahead matter: looked up once)
                if ahead is None:
                    ahead = gate_lookups.ahead_jobs(self, item)
                if waits_for_providers(job, ahead):
                    continue
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
            actions += self.leave(item, "it had a merge conflict")
            actions.append(self._report(
                item, "merge-conflict",
                reports.merge_conflict_report(item.pipeline, item.merge_error),
                self.labels.failure))
            if not self.needs_checked:
                actions += self._dequeue_dependents(item)
            gate_window.shrink(self.state)
            return actions
        graph = self._graph(item)
        last = {}
        for build in item.builds:
            if build.result is not None:
                last[build.job] = _as_result(build)
        succeeded = graph.succeeded()
        message = reports.buildset_report(item.pipeline, succeeded, item.jobs, item.job_results,
                                          last, intro=self.labels.messages.get(
                                              "success" if succeeded else "failure"))
        if succeeded:
            item.outcome = "success"
            actions.append(self._report(item, "success", message, self.labels.success,
                                        submit=True))
            return actions
        item.outcome = "failure"
        actions += self.leave(item, f"it failed ({item.pipeline})")
        actions.append(self._report(item, "failure", message, self.labels.failure))
        if not self.needs_checked:
            actions += self._dequeue_dependents(item)
        gate_window.shrink(self.state)
        return actions

    def _dequeue_dependents(self, failed: GateItem) -> list[Action]:
        """Histories recorded before needs were checked on every pass: the changes needing a
        failed one leave with it at once."""
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
                    message = f"Build failed ({other.pipeline}).\n\n{DEPENDENCY_FAILED}"
                    actions.append(self._report(other, "failure", message, self.labels.failure))
                    grew = True
        return actions

    def _learn_duration(self, job: str, seconds: float) -> None:
        known = self.state.job_seconds.get(job)
        self.state.job_seconds[job] = seconds if known is None else 0.7 * known + 0.3 * seconds

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
        message=build.message, known_failures=build.known_failures,
    )


def _as_results(builds: list[GateBuild]) -> list[BuildResult]:
    return [_as_result(b) for b in builds]
