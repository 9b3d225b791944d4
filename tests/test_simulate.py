"""`lockmaster simulate` end to end on the session's dev server: the real check workflow, the
simulated Gerrit and executor, the report of spec/scenarios.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from lockmaster.cli.simulate_cmd import simulate
from lockmaster.simulate.loading import load_scenario, parse_scenario
from lockmaster.simulate.runner import run_simulation
from tests.scenario_expect import check

SCENARIOS = Path(__file__).parent / "scenarios"
_reports: dict[tuple[str, float], dict[str, Any]] = {}


async def play(client: Client, name: str, time_scale: float = 1.0) -> dict[str, Any]:
    """Run a scenario of tests/scenarios (once per module), checking its `expect:` section."""
    if (name, time_scale) not in _reports:
        scenario = load_scenario(SCENARIOS / name)
        report = await run_simulation(scenario, client=client, time_scale=time_scale)
        assert check(report, scenario.expect or {}) == []
        _reports[name, time_scale] = report
    return _reports[name, time_scale]


def _builds(report: dict[str, Any], **want: Any) -> list[dict[str, Any]]:
    return [b for b in report["builds"] if all(b[k] == v for k, v in want.items())]


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("check-*.yaml")), ids=lambda p: p.name)
async def test_check_scenarios_meet_their_expectations(client: Client, path: Path) -> None:
    await play(client, path.name)


async def test_upload_is_checked_and_reported(client: Client) -> None:
    report = await play(client, "check-upload.yaml")
    assert report["scenario"] == "check on upload"
    a = report["changes"]["A"]
    assert {k: a[k] for k in ("number", "patchset", "project", "branch", "status")} == {
        "number": 1, "patchset": 1, "project": "org/project", "branch": "master",
        "status": "NEW"}
    [success] = a["reports"]
    assert (success["pipeline"], success["action"], success["labels"]) == (
        "check", "success", {"Verified": 1})
    assert success["message"].startswith("Build succeeded (check).\n\n- project-merge ")
    assert report["merged"] == []
    merge = report["builds"][0]
    assert (merge["job"], merge["changes"], merge["result"], merge["attempt"]) == (
        "project-merge", "1,1", "SUCCESS", 1)
    # Tests start after project-merge ended; every time is within the run.
    assert all(b["started"] >= merge["ended"] for b in report["builds"][1:])
    assert all(0 <= b["started"] <= b["ended"] <= report["elapsed"] for b in report["builds"])
    assert all(0.15 <= b["ended"] - b["started"] <= 0.6 for b in report["builds"])
    assert success["at"] <= report["elapsed"]
    assert report["events"][0]["event"] == "upload" and report["events"][0]["change"] == "A"
    assert report["events"][0]["at"] < 0.1  # the first event waits for nothing
    json.dumps(report)  # plain data


async def test_failure_votes_minus_one(client: Client) -> None:
    report = await play(client, "check-failure.yaml")
    [failure] = report["changes"]["A"]["reports"]
    assert failure["action"] == "failure" and failure["labels"] == {"Verified": -1}
    assert failure["message"].startswith("Build failed (check).")
    assert "project-test1" in failure["message"] and ": FAILURE in " in failure["message"]


async def test_retry_three_times_gives_retry_limit(client: Client) -> None:
    report = await play(client, "check-retry-limit.yaml")
    merges = _builds(report, job="project-merge")
    assert [(b["attempt"], b["result"]) for b in merges] == [
        (1, "RETRY"), (2, "RETRY"), (3, "RETRY_LIMIT")]
    [failure] = report["changes"]["A"]["reports"]
    assert ": RETRY_LIMIT" in failure["message"]
    assert "project-test1 : SKIPPED" in failure["message"]  # skipped jobs: named, not listed
    assert len(report["builds"]) == 3


async def test_new_patchset_aborts_the_running_build(client: Client) -> None:
    report = await play(client, "check-new-patchset.yaml")
    old = _builds(report, changes="1,1")
    assert [(b["job"], b["result"]) for b in old] == [("project-merge", "ABORTED")]
    new_patchset_at = report["events"][1]["at"]
    assert 1.5 <= new_patchset_at < 1.8
    assert old[0]["ended"] - new_patchset_at < 0.5  # cancelled promptly, not run out
    assert any(a.startswith("cancelled ") for a in report["events"][1]["actions"])
    new = _builds(report, changes="1,2")
    assert {b["job"] for b in new} == {"project-merge", "project-test1", "project-test2"}
    assert all(b["result"] == "SUCCESS" for b in new)
    a = report["changes"]["A"]
    assert a["patchset"] == 2
    assert [(r["action"], r["patchset"]) for r in a["reports"]] == [("success", 2)]


async def test_timed_events_and_settling(client: Client) -> None:
    report = await play(client, "check-timing.yaml")
    upload_a, upload_b, recheck = report["events"]
    assert upload_a["at"] < 0.1
    assert 1.0 <= upload_b["at"] < 1.3  # at its time, though A's check was still running
    first_round = [b for b in report["builds"] if b["started"] < recheck["at"]]
    assert {b["change"] for b in first_round} == {"A", "B"}
    # The recheck (no `at`) waited until both checks were done and reported.
    assert all(b["ended"] <= recheck["at"] for b in first_round)
    b_report = report["changes"]["B"]["reports"][0]
    assert b_report["at"] <= recheck["at"]
    second_round = [b for b in report["builds"] if b["started"] >= recheck["at"]]
    assert {b["change"] for b in second_round} == {"A"} and len(second_round) == 3
    assert [r["action"] for r in report["changes"]["A"]["reports"]] == ["success", "success"]
    assert recheck["text"] == "recheck"
    assert report["elapsed"] >= max(b["ended"] for b in report["builds"])


async def test_time_scale_scales_durations_and_at(client: Client) -> None:
    report = await play(client, "check-timing.yaml", time_scale=0.5)
    assert report["time-scale"] == 0.5
    assert 0.5 <= report["events"][1]["at"] < 0.8
    assert all(0.1 <= b["ended"] - b["started"] < 0.3 for b in report["builds"])


async def test_review_actions(client: Client) -> None:
    report = await play(client, "check-review-actions.yaml")
    events = {e["event"]: e for e in report["events"]}
    assert events["approve"]["actions"] == []  # silent
    assert all(a.startswith("ignored") for a in events["comment"]["actions"])
    assert any(a.startswith("cancelled ") for a in events["abandon"]["actions"])
    assert [b["result"] for b in report["builds"]] == ["ABORTED"]


async def test_review_system_refusal_is_recorded_not_fatal(client: Client) -> None:
    scenario = parse_scenario("""\
changes:
  A: {project: org/project}
events:
  - abandon: A
  - {approve: A}
""")
    report = await run_simulation(scenario, client=client)
    approve = report["events"][1]
    assert "abandoned" in approve["error"]
    assert report["changes"]["A"]["status"] == "ABANDONED"


async def test_nothing_is_left_running(client: Client) -> None:
    await play(client, "check-review-actions.yaml")
    running = [wf.id async for wf in client.list_workflows(
        'WorkflowId STARTS_WITH "sim-" AND ExecutionStatus = "Running"')]
    assert running == []


def test_command_line_runs_on_an_existing_server(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    app = typer.Typer(add_completion=False)
    app.command()(simulate)
    address = temporal_env.client.service_client.config.target_host
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, [str(SCENARIOS / "check-failure.yaml"), "--json", str(out),
                                      "--address", address, "--time-scale", "0.5"])
    assert result.exit_code == 0, result.output
    assert "Scenario: check failure" in result.output
    assert "A  1,1  org/project (master)  NEW  -- check failure Verified-1" in result.output
    report = json.loads(out.read_text())
    assert set(report) >= {"scenario", "elapsed", "changes", "merged", "builds", "events"}
    assert set(report["builds"][0]) >= {"pipeline", "job", "change", "changes", "result",
                                        "attempt", "started", "ended"}
    assert set(report["changes"]["A"]["reports"][0]) >= {"pipeline", "action", "labels",
                                                         "message", "at"}


def test_command_line_internal_error_exits_1(tmp_path: Path) -> None:
    app = typer.Typer(add_completion=False)
    app.command()(simulate)
    result = CliRunner().invoke(app, [str(SCENARIOS / "check-upload.yaml"),
                                      "--address", "127.0.0.1:1"])
    assert result.exit_code == 1, result.output
    assert "could not run to the end" in result.output
