"""The gate's queue processor as pure functions: Zuul's dependent-pipeline rules, no Temporal."""

from __future__ import annotations

import itertools

from lockmaster.model.build import BuildResult, JobSpec, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.gate import GateItem, QueueState
from lockmaster.model.state import PrepareStateResult, SpeculativeState
from lockmaster.pipelines.gate_queue import (
    DEPENDENCY_FAILED,
    BuildAction,
    CancelAction,
    GateQueue,
    ItemLabels,
    MergeAction,
    ReportItemAction,
    SubmitBatchAction,
)

JOBS = [JobSpec(name="merge", run="true"), JobSpec(name="test", run="true", dependencies=["merge"])]


class Sim:
    """Drives a GateQueue: merges succeed unless told otherwise; builds are finished by hand."""

    def __init__(self, window: int = 20, jobs: list[JobSpec] | None = None,
                 batches: bool = False) -> None:
        self.state = QueueState(queue="q", pipeline="gate", window=window, window_floor=3,
                                window_increase_amount=1, window_decrease_factor=2)
        ids = (f"b{n}" for n in itertools.count(1))
        self.queue = GateQueue(self.state, ItemLabels(start={"Verified": 0},
                                                      success={"Verified": 2},
                                                      failure={"Verified": -2}),
                               lambda: next(ids), submit_in_batches=batches)
        self.jobs = jobs or JOBS
        self.conflicts: set[str] = set()  # change keys whose merge conflicts
        self.running: dict[str, tuple[str, int, BuildAction]] = {}  # build id -> item
        self.reports: list[tuple[str, str]] = []  # (change key, action)
        self.submits: list[str] = []
        self.batches: list[list[str]] = []  # the change keys of each submit action
        self.cancelled: list[str] = []
        self.hold_submits = False  # keep batches in `held` instead of carrying them out
        self.held: list[SubmitBatchAction] = []

    def add(self, *numbers: int, needs: dict[int, list[int]] | None = None) -> None:
        for n in numbers:
            change = ChangeRef(connection="c", project="p", branch="master", number=n, patchset=1)
            item = GateItem(id=f"i{n}", change=change, pipeline="gate", jobs=self.jobs,
                            enqueued_at=float(n))
            self.queue.enqueue(item, [f"{d},1" for d in (needs or {}).get(n, [])])
        self.step()

    def step(self) -> None:
        """Process and carry out actions until nothing changes (merges are instant)."""
        pending = self.queue.process(0.0)
        while pending:
            action = pending.pop(0)
            if isinstance(action, MergeAction):
                last = action.changes[-1].key
                ok = not any(c.key in self.conflicts for c in action.changes) and True
                ok = ok and last not in self.conflicts
                result = PrepareStateResult(
                    ok=ok, error=None if ok else f"conflict in {last}",
                    state=SpeculativeState(changes=action.changes) if ok else None)
                self.queue.merge_done(action.key, action.buildset, result)
                pending += self.queue.process(0.0)
            elif isinstance(action, BuildAction):
                self.running[action.build.build_id] = (action.key, action.buildset, action)
            elif isinstance(action, CancelAction):
                for build_id in action.build_ids:
                    self.cancelled.append(build_id)
                    key = self.running.pop(build_id)[0]
                    self.queue.build_cancelled(key, build_id)
            elif isinstance(action, SubmitBatchAction) and self.hold_submits:
                self.held.append(action)
            elif isinstance(action, SubmitBatchAction):
                self.batches.append([a.change.key for a in action.reports])
                # As the batch activity does: in order, stopping at the first refusal.
                for index, report in enumerate(action.reports):
                    self.reports.append((report.change.key, report.action))
                    if not self._submit(report):
                        for rest in action.reports[index + 1:]:
                            self.queue.submit_not_attempted(rest.key)
                        break
                pending += self.queue.process(0.0)
            elif isinstance(action, ReportItemAction):
                self.reports.append((action.change.key, action.action))
                if action.submit:
                    self.batches.append([action.change.key])
                    self._submit(action)
                    pending += self.queue.process(0.0)

    def _submit(self, action: ReportItemAction) -> bool:
        ok = action.change.key not in self.refuse
        self.submits.append(action.change.key)
        for follow in self.queue.submit_done(action.key, ok, None if ok else "no"):
            if isinstance(follow, ReportItemAction):
                self.reports.append((follow.change.key, follow.action))
        return ok

    refuse: set[str] = set()

    def builds(self, number: int) -> list[tuple[str, str]]:
        """(job, speculative changes) of the running builds of an item."""
        return sorted((a.job.name, a.build.changes) for k, _, a in self.running.values()
                      if k == f"{number},1")

    def finish(self, number: int, job: str, result: Result = Result.SUCCESS) -> None:
        for build_id, (key, buildset, action) in list(self.running.items()):
            if key == f"{number},1" and action.job.name == job:
                del self.running[build_id]
                self.queue.build_done(key, buildset, BuildResult(
                    build_id=build_id, job=job, result=result, started=0, ended=1))
                self.step()
                return
        raise AssertionError(f"{job} of {number} is not running: {self.running}")

    def pass_all(self, number: int) -> None:
        for job in ("merge", "test"):
            self.finish(number, job)

    def order(self) -> list[int]:
        return [i.change.number for i in self.state.items]


def test_items_build_on_everything_ahead_and_merge_in_order() -> None:
    sim = Sim()
    sim.add(1, 2, 3)
    assert sim.builds(1) == [("merge", "1,1")]
    assert sim.builds(2) == [("merge", "1,1 2,1")]
    assert sim.builds(3) == [("merge", "1,1 2,1 3,1")]
    sim.pass_all(3)  # done early: waits for those ahead
    sim.pass_all(2)
    assert sim.submits == []
    sim.pass_all(1)
    assert sim.submits == ["1,1", "2,1", "3,1"]
    assert sim.cancelled == []  # nobody was rebuilt after a merge ahead
    assert sim.state.window == 23  # +1 per merge
    assert [r for r in sim.reports if r[1] == "start"] == [("1,1", "start"), ("2,1", "start"),
                                                          ("3,1", "start")]


def test_failing_item_is_bypassed_and_reported_at_the_head() -> None:
    sim = Sim()
    sim.add(1, 2, 3)
    sim.finish(2, "merge", Result.FAILURE)  # 2 fails while 1 is still running
    # 3 is moved behind 1 (the nearest item ahead that is not failing) and rebuilt.
    assert sim.builds(3) == [("merge", "1,1 3,1")]
    assert len(sim.cancelled) == 1
    # 2 keeps running its other jobs? its only other job depended on merge: skipped.
    assert sim.state.items[1].job_results == {"merge": Result.FAILURE, "test": Result.SKIPPED}
    assert ("2,1", "failure") not in sim.reports  # not at the head yet
    sim.pass_all(1)
    assert ("2,1", "failure") in sim.reports  # now nothing non-failing is ahead of it
    sim.pass_all(3)
    assert sim.submits == ["1,1", "3,1"]
    assert sim.state.window == 11  # 20 +1 (merge of 1), halved (failure of 2), +1 (merge of 3)


def test_head_failure_lets_the_rest_restart_on_the_branch_tip() -> None:
    sim = Sim(jobs=[JobSpec(name="merge", run="true"), JobSpec(name="slow", run="true")])
    sim.add(1, 2)
    sim.finish(1, "merge", Result.FAILURE)  # head failing, its `slow` job still runs
    assert sim.builds(1) == [("slow", "1,1")]
    assert sim.builds(2) == [("merge", "2,1"), ("slow", "2,1")]
    sim.finish(2, "merge")
    sim.finish(2, "slow")
    # 2 merges before the failing head leaves.
    assert sim.submits == ["2,1"]
    assert sim.order() == [1]
    sim.finish(1, "slow")
    assert sim.reports[-1] == ("1,1", "failure")
    assert sim.order() == []


def test_window_limits_who_runs_jobs() -> None:
    sim = Sim(window=2)
    sim.add(1, 2, 3)
    assert sim.builds(3) == []
    sim.pass_all(1)
    assert sim.builds(3) == [("merge", "2,1 3,1")]  # window grew to 3, and 1 left


def test_window_halves_on_failure_to_its_floor() -> None:
    sim = Sim(window=8)
    sim.add(1)
    sim.finish(1, "merge", Result.FAILURE)
    assert sim.state.window == 4
    sim.add(2)
    sim.finish(2, "merge", Result.FAILURE)
    sim.add(3)
    sim.finish(3, "merge", Result.FAILURE)
    assert sim.state.window == 3


def test_merge_conflict_reports_without_jobs_and_reparents() -> None:
    sim = Sim()
    sim.conflicts = {"2,1"}
    sim.add(1, 2, 3)
    assert sim.builds(2) == []
    assert sim.builds(3) == [("merge", "1,1 3,1")]
    assert ("2,1", "start") not in sim.reports
    sim.pass_all(1)
    assert ("2,1", "merge-conflict") in sim.reports
    sim.pass_all(3)
    assert sim.submits == ["1,1", "3,1"]


def test_merge_failure_resets_followers_and_keeps_the_window() -> None:
    sim = Sim()
    Sim.refuse = {"1,1"}
    try:
        sim.add(1, 2)
        sim.pass_all(2)
        sim.pass_all(1)
    finally:
        Sim.refuse = set()
    assert ("1,1", "merge-failure") in sim.reports
    assert sim.state.window == 20
    # 2 was built on 1, which did not merge: rebuilt on the tip.
    assert sim.builds(2) == [("merge", "2,1")]


def test_dependents_of_a_failed_change_leave_with_it() -> None:
    sim = Sim()
    sim.add(1)
    sim.add(2, needs={2: [1]})
    sim.add(3)
    sim.finish(1, "merge", Result.FAILURE)
    assert ("2,1", "failure") in sim.reports
    assert sim.order() == [3]
    assert sim.builds(3) == [("merge", "3,1")]
    assert DEPENDENCY_FAILED.startswith("This change depends")


def test_promote_reorders_and_promoting_the_current_order_does_nothing() -> None:
    sim = Sim()
    sim.add(1, 2, 3)
    assert not sim.queue.promote(["1,1", "2,1"])
    sim.step()
    assert sim.cancelled == []
    assert sim.queue.promote(["3,1"])
    sim.step()
    assert sim.order() == [3, 1, 2]
    assert sim.builds(3) == [("merge", "3,1")]
    assert sim.builds(1) == [("merge", "3,1 1,1")]
    assert sim.builds(2) == [("merge", "3,1 1,1 2,1")]
    assert [i.enqueued_at for i in sim.state.items] == [3.0, 1.0, 2.0]


def test_retry_results_run_the_job_again_within_attempts() -> None:
    sim = Sim(jobs=[JobSpec(name="merge", run="true", attempts=2)])
    sim.add(1)
    sim.finish(1, "merge", Result.RETRY)
    assert sim.builds(1) == [("merge", "1,1")]  # attempt 2
    sim.finish(1, "merge", Result.RETRY)
    assert sim.reports[-1] == ("1,1", "failure")
    assert sim.state.items == []


def test_stale_results_of_a_reset_buildset_are_ignored() -> None:
    sim = Sim()
    sim.add(1, 2)
    [(build_id, (key, buildset, _))] = [(b, v) for b, v in sim.running.items() if v[0] == "2,1"]
    sim.finish(1, "merge", Result.FAILURE)  # 1 leaves; 2 is reset onto the tip
    assert build_id in sim.cancelled
    sim.queue.build_done(key, buildset, BuildResult(build_id=build_id, job="merge",
                                                   result=Result.FAILURE))
    [item] = sim.state.items
    assert item.key == "2,1" and item.job_results == {}
    assert sim.builds(2) == [("merge", "2,1")]


def test_news_of_our_own_merge_before_the_submit_answer_resets_nobody() -> None:
    sim = Sim()
    sim.add(1, 2)
    sim.pass_all(2)
    sim.finish(1, "merge")
    # Report 1's success but hold its submit answer; the merge news arrives first.
    key, buildset, action = next(v for v in sim.running.values() if v[0] == "1,1")
    del sim.running[action.build.build_id]
    sim.queue.build_done(key, buildset, BuildResult(build_id=action.build.build_id,
                                                    job="test", result=Result.SUCCESS))
    actions = sim.queue.process(0.0)
    assert [a.action for a in actions if isinstance(a, ReportItemAction)] == ["success"]
    assert sim.queue.merged_elsewhere("p", 1) == []  # ours: the submit answer decides
    sim.queue.submit_done("1,1", True, None)
    sim.step()
    assert sim.cancelled == []
    assert sim.state.merged_keys == ["1,1", "2,1"]  # and 2, done already, followed


def test_a_change_merged_by_someone_else_leaves_without_resetting_followers() -> None:
    sim = Sim()
    sim.add(1, 2)
    assert sim.queue.merged_elsewhere("p", 1) == [CancelAction(
        [b for b, v in sim.running.items() if v[0] == "1,1"])]
    sim.step()
    assert sim.builds(2) == [("merge", "1,1 2,1")]  # not rebuilt


def test_job_durations_are_learned_for_estimates() -> None:
    sim = Sim()
    sim.add(1)
    sim.finish(1, "merge")  # Sim builds take 1 s (started 0, ended 1)
    assert sim.state.job_seconds == {"merge": 1.0}


def test_builds_receive_the_artifacts_of_their_dependencies_and_of_the_items_ahead() -> None:
    from lockmaster.model.build import Artifact

    sim = Sim()
    sim.add(1, 2)

    def made(number: int, job: str) -> None:
        for build_id, (key, buildset, action) in list(sim.running.items()):
            if key == f"{number},1" and action.job.name == job:
                del sim.running[build_id]
                sim.queue.build_done(key, buildset, BuildResult(
                    build_id=build_id, job=job, result=Result.SUCCESS, started=0, ended=1,
                    artifacts=[Artifact(name="repo", url=f"http://logs/{number}/{job}/",
                                        job=job, project="p", change=number, patchset=1)]))
                sim.step()
                return
        raise AssertionError(f"{job} of {number} is not running")

    assert sim.queue.artifacts_for("1,1", "merge") == []
    made(1, "merge")
    made(2, "merge")
    # 2's test sees its own merge job's repository and 1's (its state includes change 1).
    urls = [a.url for a in sim.queue.artifacts_for("2,1", "test")]
    assert urls == ["http://logs/1/merge/", "http://logs/2/merge/"]
    # 1's test sees only its own: nothing ahead of it.
    assert [a.url for a in sim.queue.artifacts_for("1,1", "test")] == ["http://logs/1/merge/"]
    # A job that depends on nothing gets the items ahead's artifacts only.
    assert [a.url for a in sim.queue.artifacts_for("2,1", "merge")] == ["http://logs/1/merge/"]


def test_a_failed_job_aborts_the_running_jobs_it_stops() -> None:
    jobs = [JobSpec(name="repo", run="true"),
            JobSpec(name="install", run="true", dependencies=["repo"]),
            JobSpec(name="systest", run="true", dependencies=["repo"], aborted_by=["install"])]
    sim = Sim(jobs=jobs)
    sim.add(1)
    sim.finish(1, "repo")
    assert sim.builds(1) == [("install", "1,1"), ("systest", "1,1")]
    sim.finish(1, "install", Result.FAILURE)
    # The system test was cancelled at once, and counts as aborted; the item fails.
    assert len(sim.cancelled) == 1 and sim.builds(1) == []
    assert ("1,1", "failure") in sim.reports
    assert sim.submits == []


# --- submits in batches ---------------------------------------------------------------------


def test_successes_at_the_head_are_submitted_in_one_batch() -> None:
    sim = Sim(batches=True)
    sim.add(1, 2, 3)
    sim.pass_all(3)
    sim.pass_all(2)
    assert sim.batches == []  # all wait for the head
    sim.pass_all(1)
    assert sim.batches == [["1,1", "2,1", "3,1"]]
    assert sim.submits == ["1,1", "2,1", "3,1"]
    assert [r for r in sim.reports if r[1] == "success"] == [
        ("1,1", "success"), ("2,1", "success"), ("3,1", "success")]
    assert sim.order() == [] and sim.cancelled == []
    assert sim.state.window == 23


def test_without_batches_each_success_is_submitted_alone() -> None:
    sim = Sim()
    sim.add(1, 2, 3)
    sim.pass_all(3)
    sim.pass_all(2)
    sim.pass_all(1)
    assert sim.batches == [["1,1"], ["2,1"], ["3,1"]]


def test_a_refusal_stops_the_batch_and_the_rest_is_tested_again() -> None:
    sim = Sim(batches=True)
    Sim.refuse = {"2,1"}
    try:
        sim.add(1, 2, 3)
        sim.pass_all(3)
        sim.pass_all(2)
        sim.pass_all(1)
    finally:
        Sim.refuse = set()
    assert sim.batches == [["1,1", "2,1", "3,1"]]
    assert sim.submits == ["1,1", "2,1"]  # 3 was tested on top of 2: not submitted
    assert ("2,1", "merge-failure") in sim.reports
    assert ("3,1", "success") not in sim.reports  # not reported either
    assert sim.order() == [3]
    assert sim.builds(3) == [("merge", "3,1")]  # rebuilt on the tip, which holds 1
    sim.pass_all(3)
    assert sim.submits == ["1,1", "2,1", "3,1"]
    assert sim.batches[-1] == ["3,1"]


def test_a_batch_ends_at_an_item_still_running_or_failing() -> None:
    sim = Sim(batches=True)
    sim.add(1, 2, 3, 4)
    sim.finish(2, "merge", Result.FAILURE)  # 2 is failing and complete (test: skipped)
    sim.pass_all(3)  # rebuilt on 1: passes
    sim.finish(4, "merge")  # 4 still runs its test
    sim.pass_all(1)
    # 1 alone: 2 is failing (reported once it is the head), 3 waits for it to leave.
    assert sim.batches[0] == ["1,1"]
    assert ("2,1", "failure") in sim.reports
    assert sim.batches[1] == ["3,1"]  # then at the head; 4 still runs
    sim.finish(4, "test")
    assert sim.batches == [["1,1"], ["3,1"], ["4,1"]]
    assert sim.submits == ["1,1", "3,1", "4,1"]


def test_news_of_a_batch_merging_before_its_answer_resets_nobody() -> None:
    """Gerrit's change-merged events may come before the batch's answer: every item of the batch
    counts as being submitted, so nobody behind is reset and nothing is submitted twice."""
    sim = Sim(batches=True)
    sim.hold_submits = True
    sim.add(1, 2, 3)
    sim.pass_all(2)
    sim.pass_all(1)
    [batch] = sim.held
    assert [a.change.key for a in batch.reports] == ["1,1", "2,1"]  # 3 still runs
    assert sim.queue.merged_elsewhere("p", 1) == []
    assert sim.queue.merged_elsewhere("p", 2) == []
    assert sim.queue.process(0.0) == []  # 3 keeps its builds, on 1 and 2
    assert sim.builds(3) == [("merge", "1,1 2,1 3,1")]
    assert sim.queue.submit_done("1,1", True, None) == []
    assert sim.queue.submit_done("2,1", True, None) == []
    sim.step()
    assert sim.order() == [3] and sim.cancelled == []


# --- a merge made while the dependencies were read ----------------------------------------------


def _ref(n: int) -> ChangeRef:
    return ChangeRef(connection="c", project="p", branch="master", number=n, patchset=1)


def _item(n: int) -> GateItem:
    return GateItem(id=f"i{n}", change=_ref(n), pipeline="gate", jobs=JOBS, enqueued_at=float(n))


def _merged(*numbers: int) -> PrepareStateResult:
    return PrepareStateResult(ok=True, state=SpeculativeState(changes=[_ref(n) for n in numbers]))


def test_a_merge_prepared_on_the_queues_tail_is_taken_and_jobs_start_at_once() -> None:
    sim = Sim()
    sim.add(1, 2)
    assert [c.key for c in sim.queue.tail_changes()] == ["1,1", "2,1"]
    sim.queue.enqueue(_item(3), prepared=([_ref(1), _ref(2), _ref(3)], _merged(1, 2, 3)))
    actions = sim.queue.process(0.0)
    assert not any(isinstance(a, MergeAction) for a in actions)  # no second merge
    assert [(a.key, a.job.name) for a in actions if isinstance(a, BuildAction)] == [
        ("3,1", "merge")]


def test_a_prepared_merge_of_a_stale_tail_is_ignored() -> None:
    sim = Sim()
    sim.add(1, 2)
    sim.finish(2, "merge", Result.FAILURE)  # 2 is failing: 3 will be tested on 1 alone
    assert [c.key for c in sim.queue.tail_changes()] == ["1,1"]
    sim.queue.enqueue(_item(3), prepared=([_ref(1), _ref(2), _ref(3)], _merged(1, 2, 3)))
    actions = sim.queue.process(0.0)
    merges = [a for a in actions if isinstance(a, MergeAction)]
    assert [[c.key for c in m.changes] for m in merges] == [["1,1", "3,1"]]


def test_a_prepared_merge_beyond_the_window_is_ignored() -> None:
    sim = Sim(window=2)
    sim.add(1, 2)
    sim.queue.enqueue(_item(3), prepared=([_ref(1), _ref(2), _ref(3)], _merged(1, 2, 3)))
    assert sim.state.items[2].merge == "none"
    assert sim.queue.process(0.0) == []  # outside the window: nothing until it moves up


def test_a_prepared_merge_conflict_is_reported_as_a_conflict() -> None:
    sim = Sim()
    sim.add(1)
    sim.queue.enqueue(_item(2), prepared=([_ref(1), _ref(2)], PrepareStateResult(
        ok=False, error="conflict in 2,1")))
    sim.step()
    assert sim.builds(2) == []
    sim.pass_all(1)
    assert ("2,1", "merge-conflict") in sim.reports
