"""The queue processor's rules not covered in tests/test_gate_queue.py: needed changes checked on
every pass, fail-fast, hold-following-changes, non-voting jobs and the start reporter
(lockmaster/pipelines/gate_queue.py), without Temporal."""

from __future__ import annotations

from lockmaster.model.build import JobSpec, Result
from lockmaster.model.gate import GateItem, GateTested, GateTestedBuild
from lockmaster.pipelines.gate_queue import DEPENDENCY_FAILED
from lockmaster.pipelines.gate_tested import remember
from tests.gate_harness import JOBS, Gate, deps, info, labels, need, ref, request

NEEDED = f"Build failed (gate).\n\n{DEPENDENCY_FAILED}\n\nChange "
MERGE_SLOW = [JobSpec(name="merge", run="true"), JobSpec(name="slow", run="true")]


def running_ids(gate: Gate, number: int) -> list[str]:
    return sorted(b for b, v in gate.running.items() if v[0] == f"{number},1")


# --- needed changes ------------------------------------------------------------------------------


def test_a_change_needing_a_failed_change_leaves_with_a_report_naming_it() -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    gate.ask(request(2), deps(info(1), info(2, 1)))
    gate.ask(request(3), deps(info(3)))
    gate.finish(1, "merge", Result.FAILURE)  # complete (test skipped) at the head: reported
    assert gate.order() == [3]
    assert gate.actions_of(1) == ["start", "failure"]
    assert gate.told(2)[-1] == ("failure", NEEDED + "1,1 is needed: it failed (gate).")
    assert [s.labels for s in gate.said if s.key == "2,1"] == [{"Verified": 0},
                                                               {"Verified": -2}]
    assert gate.builds(3) == [("merge", "3,1")]
    assert gate.state.left["2,1"] == ("it depends on a change that failed to merge "
                                      "(change 1,1: it failed (gate))")


def test_a_change_needing_a_failing_change_runs_nothing_until_it_leaves_with_it() -> None:
    gate = Gate()
    for n, result in ((1, deps(info(1))), (2, deps(info(1), info(2, 1))), (3, deps(info(3)))):
        gate.ask(request(n, jobs=MERGE_SLOW), result)
    twos = running_ids(gate, 2)
    assert len(twos) == 2
    gate.finish(1, "merge", Result.FAILURE)  # 1 is failing; its slow job still runs
    assert set(twos) <= set(gate.cancelled)  # 2 cannot merge without 1: stopped at once
    assert gate.order() == [1, 2, 3]
    assert gate.builds(2) == []
    assert gate.builds(3) == [("merge", "3,1"), ("slow", "3,1")]  # tested without 1 and 2
    assert gate.actions_of(2) == ["start"]
    gate.finish(1, "slow")
    assert gate.order() == [3]
    assert gate.told(2)[-1] == ("failure", NEEDED + "1,1 is needed: it failed (gate).")
    assert gate.builds(3) == [("merge", "3,1"), ("slow", "3,1")]  # not reset again
    cancelled = len(gate.cancelled)
    gate.finish(3, "merge")
    gate.finish(3, "slow")
    assert gate.submits == ["3,1"] and len(gate.cancelled) == cancelled


def test_a_change_needing_a_change_that_merged_follows_it() -> None:
    gate = Gate()
    gate.ask(request(2), deps(info(1), info(2, 1)))
    gate.pass_all(2)
    gate.pass_all(1)
    assert gate.submits == ["1,1", "2,1"]
    assert [a for _, a in gate.reports if a == "failure"] == []


def test_a_change_whose_needed_change_is_not_ahead_leaves_with_a_report() -> None:
    gate = Gate()
    item = GateItem(id="i2", change=ref(2), pipeline="gate", jobs=JOBS, enqueued_at=0.0)
    gate.queue.enqueue(item, ["9,1"])
    gate.step()
    assert gate.order() == []
    assert gate.told(2) == [("failure", NEEDED + "9,1 is needed: it is not in the queue ahead "
                                                 "of this change.")]
    assert gate.running == {}


def test_a_needed_change_moved_behind_by_a_promote_is_put_back_ahead() -> None:
    gate = Gate()
    gate.ask(request(1), deps(info(1)))
    gate.ask(request(2), deps(info(1), info(2, need(1, via="depends-on"))))
    gate.ask(request(3), deps(info(3)))
    assert not gate.queue.promote(["2"])  # placed behind what it needs: nothing moves
    gate.step()
    assert gate.order() == [1, 2, 3] and gate.cancelled == []
    assert gate.queue.promote(["3", "2"])
    gate.step()
    assert gate.order() == [3, 1, 2]
    assert gate.builds(2) == [("merge", "3,1 1,1 2,1")]
    assert "failure" not in gate.actions_of(2)


def test_without_needs_checked_an_abandoned_needed_change_leaves_its_dependent_in() -> None:
    # Histories recorded before the check replay as they ran: only a failure took dependents.
    gate = Gate(needs_checked=False)
    gate.ask(request(2), deps(info(1), info(2, 1)))
    gate.update(1, status="ABANDONED")
    assert gate.order() == [2]
    assert gate.builds(2) == [("merge", "2,1")]


# --- fail-fast -----------------------------------------------------------------------------------


FAST = [JobSpec(name="a", run="true"), JobSpec(name="b", run="true"),
        JobSpec(name="c", run="true", dependencies=["b"])]


def test_fail_fast_stops_the_item_and_reports_it_at_once() -> None:
    gate = Gate()
    gate.ask(request(1, jobs=FAST, fail_fast=True), deps(info(1)))
    gate.ask(request(2, jobs=FAST, fail_fast=True), deps(info(2)))
    b_of_1 = [b for b, v in gate.running.items() if v[0] == "1,1" and v[2].job.name == "b"]
    behind = running_ids(gate, 2)
    gate.finish(1, "a", Result.FAILURE)
    assert set(b_of_1) <= set(gate.cancelled) and set(behind) <= set(gate.cancelled)
    assert gate.order() == [2]
    [(action, message)] = gate.told(1)[1:]
    assert action == "failure"
    assert message.splitlines()[2:] == [
        "- a : FAILURE in 1.0s",
        "- b : ABORTED (aborted: a failed (fail-fast))",
        "- c : SKIPPED"]
    assert gate.builds(2) == [("a", "2,1"), ("b", "2,1")]  # reset onto the tip at once
    assert gate.state.window == 10


def test_without_fail_fast_the_report_waits_for_the_other_jobs() -> None:
    gate = Gate()
    gate.ask(request(1, jobs=FAST), deps(info(1)))
    gate.finish(1, "a", Result.FAILURE)
    assert gate.builds(1) == [("b", "1,1")] and gate.cancelled == []
    assert gate.actions_of(1) == ["start"]
    gate.finish(1, "b")
    gate.finish(1, "c")
    assert gate.actions_of(1) == ["start", "failure"] and gate.order() == []


def test_fail_fast_behind_the_head_resets_the_followers_and_reports_later() -> None:
    gate = Gate()
    for n in (1, 2, 3):
        gate.ask(request(n, jobs=FAST, fail_fast=(n == 2)), deps(info(n)))
    gate.finish(2, "a", Result.FAILURE)
    assert gate.builds(2) == []
    assert gate.item(2).job_results == {"a": Result.FAILURE, "b": Result.ABORTED,
                                        "c": Result.SKIPPED}
    assert gate.builds(3) == [("a", "1,1 3,1"), ("b", "1,1 3,1")]
    assert gate.actions_of(2) == ["start"]  # 1 is still ahead of it
    for job in ("a", "b", "c"):
        gate.finish(1, job)
    assert gate.actions_of(2) == ["start", "failure"]
    assert gate.submits == ["1,1"] and gate.order() == [3]
    assert gate.builds(3) == [("a", "1,1 3,1"), ("b", "1,1 3,1")]  # 1 merged: no reset


def test_fail_fast_ignores_a_failing_non_voting_job() -> None:
    jobs = [JobSpec(name="a", run="true", voting=False), JobSpec(name="b", run="true")]
    gate = Gate()
    gate.ask(request(1, jobs=jobs, fail_fast=True), deps(info(1)))
    gate.finish(1, "a", Result.FAILURE)
    assert gate.cancelled == [] and gate.builds(1) == [("b", "1,1")]
    gate.finish(1, "b")
    assert gate.submits == ["1,1"]


def test_fail_fast_waits_for_the_retries_of_a_job() -> None:
    gate = Gate()
    gate.ask(request(1, jobs=FAST, fail_fast=True), deps(info(1)))
    gate.finish(1, "a", Result.RETRY)
    assert gate.cancelled == []
    assert gate.builds(1) == [("a", "1,1"), ("b", "1,1")]  # a's second attempt
    assert [b.attempt for b in gate.item(1).builds if b.job == "a"] == [1, 2]


# --- hold-following-changes ---------------------------------------------------------------


HOLD = [JobSpec(name="merge", run="true", hold_following_changes=True),
        JobSpec(name="test", run="true", dependencies=["merge"])]


def test_changes_behind_wait_until_the_hold_job_succeeded_ahead() -> None:
    gate = Gate()
    for n in (1, 2, 3):
        gate.ask(request(n, jobs=HOLD), deps(info(n)))
    assert gate.builds(1) == [("merge", "1,1")]
    assert gate.builds(2) == [] and gate.builds(3) == []
    assert gate.item(2).merge == "ok"  # merged and waiting, not held back from merging
    gate.finish(1, "merge")
    assert gate.builds(1) == [("test", "1,1")]
    assert gate.builds(2) == [("merge", "1,1 2,1")] and gate.builds(3) == []
    gate.finish(2, "merge")
    assert gate.builds(3) == [("merge", "1,1 2,1 3,1")]


def test_a_failing_item_holds_nobody() -> None:
    hold = [JobSpec(name="merge", run="true", hold_following_changes=True),
            JobSpec(name="slow", run="true")]
    gate = Gate()
    gate.ask(request(1, jobs=hold), deps(info(1)))
    gate.ask(request(2, jobs=hold), deps(info(2)))
    assert gate.builds(2) == []
    gate.finish(1, "merge", Result.FAILURE)
    assert gate.order() == [1, 2]
    assert gate.builds(2) == [("merge", "2,1"), ("slow", "2,1")]


def test_jobs_without_hold_let_everyone_start() -> None:
    gate = Gate()
    for n in (1, 2):
        gate.ask(request(n), deps(info(n)))
    assert gate.builds(2) == [("merge", "1,1 2,1")]


# --- provides / requires (Zuul's, as its TestProvidesRequires uses them) ---------------------

PACKAGING = [JobSpec(name="build", run="true", requires=["package-repository"]),
             JobSpec(name="test-repo", run="true", dependencies=["build"],
                     provides=["package-repository"])]


def test_a_build_requiring_packages_waits_for_the_providers_ahead_and_gets_their_artifacts(
        ) -> None:
    gate = Gate()
    for n in (1, 2, 3):
        gate.ask(request(n, jobs=PACKAGING), deps(info(n)))
    assert gate.builds(1) == [("build", "1,1")]  # nothing ahead: builds at once
    assert gate.builds(2) == [] and gate.builds(3) == []
    gate.finish(1, "build")
    assert gate.builds(2) == []  # 1's test repository is not made yet
    gate.finish(1, "test-repo", artifacts=["repo"])
    assert gate.builds(2) == [("build", "1,1 2,1")]
    assert gate.builds(3) == []  # 2 provides too, and is ahead of 3
    gate.finish(2, "build")
    gate.finish(2, "test-repo")
    assert gate.builds(3) == [("build", "1,1 2,1 3,1")]


def test_the_artifacts_of_an_item_ahead_stay_after_it_was_submitted() -> None:
    """The build behind gets the test repository of the change ahead (pkgtool artifact-url repo
    --ahead) whether that change is still in the queue or already submitted: then from the
    queue's record of what it tested (gate_tested.py), as the workflow keeps it."""
    gate = Gate()
    gate.ask(request(1, jobs=PACKAGING), deps(info(1)))
    gate.ask(request(2, jobs=PACKAGING), deps(info(2)))
    gate.finish(1, "build", artifacts=["packages"])
    key2 = gate.item(2).key
    assert [(a.name, a.change) for a in gate.queue.artifacts_for(key2, "build")] == [
        ("packages", 1)]
    item1 = gate.item(1)
    gate.finish(1, "test-repo", artifacts=["repo"])
    assert gate.queue.find_number(1) is None  # submitted and merged
    assert gate.queue.artifacts_for(key2, "build") == []  # nothing on record yet
    # As the workflow records it when it asks for the submit (the harness has no merger,
    # so no speculative state: the record's other fields do not matter here).
    record = GateTested.model_construct(change=item1.change, builds=[
        GateTestedBuild(job=b.job, build_id=b.build_id, artifacts=b.artifacts)
        for b in item1.builds if b.artifacts])
    remember(gate.queue.state, record)
    assert [(a.name, a.change) for a in gate.queue.artifacts_for(key2, "build")] == [
        ("packages", 1), ("repo", 1)]


def test_a_failed_provider_ahead_stops_the_wait_and_the_item_is_retested_without_it() -> None:
    gate = Gate()
    gate.ask(request(1, jobs=PACKAGING), deps(info(1)))
    gate.ask(request(2, jobs=PACKAGING), deps(info(2)))
    gate.finish(1, "build", Result.FAILURE)  # 1 fails (test-repo skipped): 2 without it
    assert gate.order() == [2]
    assert gate.builds(2) == [("build", "2,1")]


def test_jobs_without_requires_do_not_wait_for_providers() -> None:
    jobs = [JobSpec(name="build", run="true"),
            JobSpec(name="test-repo", run="true", provides=["package-repository"])]
    gate = Gate()
    for n in (1, 2):
        gate.ask(request(n, jobs=jobs), deps(info(n)))
    assert ("build", "1,1 2,1") in gate.builds(2)


# --- non-voting jobs, reporters -----------------------------------------------------------


def test_a_failing_non_voting_job_does_not_fail_the_item() -> None:
    jobs = [JobSpec(name="merge", run="true"), JobSpec(name="docs", run="true", voting=False)]
    gate = Gate()
    gate.ask(request(1, jobs=jobs), deps(info(1)))
    gate.ask(request(2, jobs=jobs), deps(info(2)))
    gate.finish(1, "docs", Result.FAILURE)
    assert gate.cancelled == []  # 2 is not retested without 1
    assert not gate.queue.failing(gate.item(1))
    gate.finish(1, "merge")
    [(action, message)] = gate.told(1)[1:]
    assert action == "success"
    assert message.splitlines() == ["Build succeeded (gate).", "",
                                    "- merge : SUCCESS in 1.0s",
                                    "- docs : FAILURE in 1.0s (non-voting)"]
    assert gate.said[-1].labels == {"Verified": 2}
    assert gate.submits == ["1,1"] and gate.state.window == 21


def test_without_a_start_reporter_nothing_is_said_at_the_start() -> None:
    gate = Gate(item_labels=labels(start=None))
    gate.ask(request(1), deps(info(1)))
    assert gate.builds(1) == [("merge", "1,1")] and gate.said == []
    gate.pass_all(1)
    assert gate.actions_of(1) == ["success"]


def test_the_pipelines_own_first_lines() -> None:
    gate = Gate(item_labels=labels(messages={"start": "Gating.", "success": "Merging.",
                                             "failure": "Nope."}))
    gate.ask(request(1), deps(info(1)))
    gate.ask(request(2), deps(info(2)))
    gate.finish(2, "merge", Result.FAILURE)
    gate.pass_all(1)
    assert [(a, m.splitlines()[0]) for a, m in gate.told(1)] == [("start", "Gating."),
                                                                ("success", "Merging.")]
    assert [(a, m.splitlines()[0]) for a, m in gate.told(2)] == [("start", "Gating."),
                                                                ("failure", "Nope.")]
