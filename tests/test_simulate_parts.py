"""The simulation's parts without a server: the simulated Gerrit's set-up (real git), scripted
outcomes, report tags, and what counts as a settled gate queue."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from lockmaster.model.build import BuildRequest, JobSpec, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.gate import ItemView, JobView, QueueStatus
from lockmaster.model.state import SpeculativeState
from lockmaster.review.base import SubmitRefused
from lockmaster.simulate.clock import Clock
from lockmaster.simulate.executor import SimulatedExecutor
from lockmaster.simulate.gerrit import SimulatedGerrit
from lockmaster.simulate.layout import simulation_config
from lockmaster.simulate.loading import layout_data, parse_scenario
from lockmaster.simulate.report import parse_tag
from lockmaster.simulate.scenario import Scenario
from lockmaster.simulate.settle import gate_ids, queue_busy

SCENARIO = """\
changes:
  A: {project: org/project, parent: B}
  B: {project: org/project, files: {README: "changed\\n"}}
  C: {project: org/project1, depends-on: [A, B]}
  D: {project: org/project2, branch: stable, merged: true}
outcomes:
  - {submit: C, result: refused}
  - {job: project-test1, change: B, result: FAILURE}
  - {job: project-test1, change: A, result: NODE_FAILURE}
  - {job: project-test2, change: C, result: RETRY, attempt: 1, pipeline: gate}
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


def _gerrit(tmp_path: Path, text: str = SCENARIO) -> SimulatedGerrit:
    scenario = parse_scenario(text)
    config = simulation_config(layout_data(scenario), state_dir=tmp_path / "state",
                               workflow_id_prefix="sim-x/")
    gerrit = SimulatedGerrit(scenario, config, Clock())
    gerrit.setup()
    return gerrit


def test_changes_are_created_as_the_scenario_says(tmp_path: Path) -> None:
    gerrit = _gerrit(tmp_path)
    a, b, c, d = (gerrit.info(n) for n in "ABCD")
    assert [x.number for x in (a, b, c, d)] == [1, 2, 3, 4]  # file order, parents first
    assert [x.status for x in (a, b, c, d)] == ["NEW", "NEW", "NEW", "MERGED"]
    repo = gerrit.store_of("A").repo("org/project")
    assert _git(repo, "rev-parse", f"{a.commit}^") == b.commit  # A sits on B
    assert _git(repo, "show", f"{b.commit}:README") == "changed"
    assert _git(repo, "show", f"{a.commit}:change-1.txt") == "A"  # the default: its own file
    assert "Depends-On: local://gerrit/1\nDepends-On: local://gerrit/2" in c.message
    assert d.branch == "stable"
    stable = gerrit.store_of("D").repo("org/project2")
    assert _git(stable, "merge-base", "--is-ancestor", d.commit, "refs/heads/stable") == ""


def test_submits_are_recorded_and_refused_when_scripted(tmp_path: Path) -> None:
    gerrit = _gerrit(tmp_path)
    driver = gerrit.drivers["gerrit"]

    async def main() -> None:
        with pytest.raises(SubmitRefused):
            await driver.submit(gerrit.info("C").ref())
        await driver.submit(gerrit.info("B").ref())

    asyncio.run(main())
    assert [r[0] for r in gerrit.refused] == ["C"]
    assert [(m.change, m.project, m.branch) for m in gerrit.merges] == [
        ("B", "org/project", "master")]
    assert gerrit.info("B").status == "MERGED" and gerrit.info("C").status == "NEW"


def _request(scenario: Scenario, job: str, changes: list[int], *, pipeline: str = "check",
             attempt: int = 1) -> BuildRequest:
    refs = [ChangeRef(connection="gerrit", project="org/project", branch="master", number=n,
                      patchset=1) for n in changes]
    return BuildRequest(build_id="b", pipeline=pipeline, change=refs[-1],
                        job=JobSpec(name=job, run="true"), state=SpeculativeState(changes=refs),
                        attempt=attempt, log_path="x")


def test_outcomes_apply_to_every_build_whose_state_holds_the_change() -> None:
    scenario = parse_scenario(SCENARIO)
    executor = SimulatedExecutor(scenario, Clock())
    assert executor.scripted(_request(scenario, "project-test1", [2])) is Result.FAILURE
    assert executor.scripted(_request(scenario, "project-test1", [2, 4])) is Result.FAILURE
    # The first outcome that applies wins.
    assert executor.scripted(_request(scenario, "project-test1", [1, 2])) is Result.FAILURE
    assert executor.scripted(_request(scenario, "project-test1", [1])) is Result.NODE_FAILURE
    assert executor.scripted(_request(scenario, "project-test2", [2])) is Result.SUCCESS
    assert executor.scripted(_request(scenario, "project-merge", [4])) is Result.SUCCESS
    # Narrowed by pipeline and attempt.
    assert executor.scripted(_request(scenario, "project-test2", [3])) is Result.SUCCESS
    assert executor.scripted(
        _request(scenario, "project-test2", [3], pipeline="gate")) is Result.RETRY
    assert executor.scripted(
        _request(scenario, "project-test2", [3], pipeline="gate", attempt=2)) is Result.SUCCESS


def test_report_tags() -> None:
    assert parse_tag("check:0193-abc:success") == ("check", "success")
    assert parse_tag("gate:item:with:colons:merge-failure") == ("gate", "merge-failure")
    assert parse_tag(None) == (None, None)
    assert parse_tag("autogenerated") == (None, None)


def _item(merge: str = "none", *states: str) -> ItemView:
    return ItemView(change="1,1", project="p", branch="master", active=True, failing=False,
                    changes="1,1", merge=merge, enqueued_at=0.0,  # type: ignore[arg-type]
                    jobs=[JobView(name=f"j{i}", voting=True, state=s)
                          for i, s in enumerate(states)])


def test_what_a_gate_queue_has_in_flight() -> None:
    idle = QueueStatus(queue="q", pipeline="gate", window=20, idle=True)
    assert queue_busy(idle) == []
    working = QueueStatus(queue="q", pipeline="gate", window=20, idle=False, busy=True)
    assert queue_busy(working) == ["gate queue q: work in progress"]
    building = working.model_copy(update={"items": [_item("ok", "running")]})
    assert queue_busy(building) == ["gate queue q: 1,1 (p)"]
    # Items waiting (for a dependency, outside the window) with nothing in flight: settled.
    waiting = working.model_copy(update={"busy": False, "items": [_item("ok", "waiting")]})
    assert queue_busy(waiting) == []


def test_gate_ids_of_the_default_layout(tmp_path: Path) -> None:
    scenario = parse_scenario("changes: {}\n")
    config = simulation_config(layout_data(scenario), state_dir=tmp_path,
                               workflow_id_prefix="sim-x/")
    assert gate_ids(config) == {"sim-x/gate/org/project", "sim-x/gate/integrated"}


async def test_a_queue_that_does_not_answer_in_time_is_busy_not_an_error(
        tmp_path: Path) -> None:
    """A queue deciding on a long backlog answers its status query after its workflow task:
    past the query's deadline, the settler counts it as still working (the full soak's settler
    died on "Timeout expired")."""
    from temporalio.service import RPCError, RPCStatusCode

    from lockmaster.simulate.settle import busy

    config = simulation_config(layout_data(parse_scenario("changes: {}\n")), state_dir=tmp_path,
                               workflow_id_prefix="sim-x/")
    asked: list[str] = []

    class Handle:
        def __init__(self, wid: str) -> None:
            self.wid = wid

        async def query(self, *args: object, **kwargs: object) -> QueueStatus:
            asked.append(self.wid)
            if self.wid.endswith("integrated"):
                raise RPCError("Timeout expired", RPCStatusCode.DEADLINE_EXCEEDED, b"")
            return QueueStatus(queue="org/project", pipeline="gate", window=20, idle=True)

    class Listed:
        def __init__(self, wid: str) -> None:
            self.id, self.workflow_type = wid, "GateQueueWorkflow"

    class FakeClient:
        async def list_workflows(self, query: str):  # type: ignore[no-untyped-def]
            for wid in sorted(gate_ids(config)):
                yield Listed(wid)

        def get_workflow_handle(self, wid: str) -> Handle:
            return Handle(wid)

    out = await busy(FakeClient(), config)  # type: ignore[arg-type]
    assert sorted(asked) == ["sim-x/gate/integrated", "sim-x/gate/org/project"]
    assert out == ["queue sim-x/gate/integrated: not answering its status query yet "
                   "(a long workflow task)"]


async def test_a_build_takes_its_duration_and_is_recorded() -> None:
    scenario = parse_scenario(SCENARIO + "durations: {default: 0.2, project-merge: 0.1}\n")
    executor = SimulatedExecutor(scenario, Clock(), time_scale=0.5, logs_url="https://logs/")
    env = ActivityEnvironment()
    result = await env.run(executor.run_build, _request(scenario, "project-test1", [2]))
    assert result.result is Result.FAILURE and result.log_url == "https://logs/x/"
    [record] = executor.builds
    assert (record.job, record.changes, record.result) == ("project-test1", "2,1",
                                                           Result.FAILURE)
    assert record.ended is not None and 0.08 <= record.ended - record.started < 0.2


async def test_a_build_heartbeats_as_often_as_asked() -> None:
    """Each heartbeat is a call to the Temporal server: the benchmark asks for fewer."""
    scenario = parse_scenario(SCENARIO + "durations: {default: 0.35}\n")
    counts = []
    for every in (0.1, 1.0):
        executor = SimulatedExecutor(scenario, Clock(), heartbeat=every)
        env = ActivityEnvironment()
        beats: list[object] = []
        env.on_heartbeat = lambda *details, beats=beats: beats.append(details)
        await env.run(executor.run_build, _request(scenario, "project-merge", [4]))
        counts.append(len(beats))
    assert counts[0] >= 3 and counts[1] == 1
    with pytest.raises(ValueError, match="heartbeat"):
        SimulatedExecutor(scenario, Clock(), heartbeat=0)


async def test_a_build_longer_than_its_timeout_times_out() -> None:
    scenario = parse_scenario(SCENARIO + "durations: {default: 5}\n")
    executor = SimulatedExecutor(scenario, Clock())
    request = _request(scenario, "project-merge", [4])
    request.job.timeout = 0.1
    result = await ActivityEnvironment().run(executor.run_build, request)
    assert result.result is Result.TIMED_OUT
    assert result.duration is not None and result.duration < 1


async def test_a_cancelled_build_is_listed_as_aborted() -> None:
    scenario = parse_scenario(SCENARIO + "durations: {default: 5}\n")
    executor = SimulatedExecutor(scenario, Clock())
    env = ActivityEnvironment()
    task = asyncio.create_task(env.run(executor.run_build, _request(scenario, "project-merge",
                                                                    [4])))
    await asyncio.sleep(0.2)
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [record] = executor.builds
    assert record.result is Result.ABORTED and record.ended is not None
    assert record.ended - record.started < 1
