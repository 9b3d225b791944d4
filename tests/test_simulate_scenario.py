"""Scenario files: validation (file, key path, line; exit status 2, nothing run), the default
layout, and every scenario under tests/scenarios/ being valid."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lockmaster.cli.simulate_cmd import simulate
from lockmaster.simulate.layout import SIM_CONNECTION, default_layout, simulation_config
from lockmaster.simulate.loading import ScenarioError, layout_data, load_scenario, parse_scenario
from lockmaster.simulate.scenario import ApproveEvent, PromoteEvent, SettleEvent

SCENARIOS = Path(__file__).parent / "scenarios"

VALID = """\
name: valid
changes:
  A: {project: org/project}
  B: {project: org/project1, parent: null, depends-on: [A]}
  C: {project: org/project2}
events:
  - upload: A
  - {approve: B, silent: true, at: 1.5}
  - settle
  - {promote: [B, C], pipeline: gate}
outcomes:
  - {job: project-test1, change: A, result: FAILURE}
  - {submit: B, result: refused}
durations: {default: 0.5, project-merge: 0.25}
"""


def problems(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "s.yaml")
    return [(p.path, p.line, p.message) for p in info.value.problems]


def test_valid_scenario() -> None:
    scenario = parse_scenario(VALID)
    assert scenario.title() == "valid"
    assert scenario.numbers() == {"A": 1, "B": 2, "C": 3}
    assert [e.kind for e in scenario.events] == ["upload", "approve", "settle", "promote"]
    assert isinstance(scenario.events[1], ApproveEvent) and scenario.events[1].silent
    assert scenario.events[1].at == 1.5
    assert isinstance(scenario.events[2], SettleEvent)
    assert isinstance(scenario.events[3], PromoteEvent)
    assert scenario.events[3].change_names() == ["B", "C"]
    assert scenario.duration("project-merge") == 0.25
    assert scenario.duration("project-test1") == 0.5
    assert scenario.refused_submits() == {"B"}


@pytest.mark.parametrize(
    ("text", "path", "line", "fragment"),
    [
        ("changes:\n  A: {project: org/project}\nevents:\n  - upload: A\n  - approve: Z\n",
         "events[1].approve", 5, "unknown change 'Z'"),
        ("changes:\n  A: {project: org/project}\nevents:\n  - {promote: [A, Q]}\n",
         "events[0].promote[1]", 4, "unknown change 'Q'"),
        ("changes:\n  A: {project: org/project}\nevents:\n  - explode: A\n",
         "events[0]", 4, "unknown event kind 'explode'"),
        ("changes:\n  A: {project: org/project}\nevents:\n  - upload\n",
         "events[0]", 4, "unknown event 'upload'"),
        ("changes:\n  A: {project: org/project}\nevents:\n  - {upload: A, approve: A}\n",
         "events[0]", 4, "one event per entry"),
        ("changes:\n  A: {project: org/project}\nevents:\n"
         "  - {comment: A, text: x, silent: true}\n",
         "events[0].silent", 4, "unknown key"),
        ("changes:\n  A: {project: org/project}\nevents:\n  - {comment: A}\n",
         "events[0].text", 4, "Field required"),
        ("changes:\n  A: {project: org/project}\nevents:\n  - {upload: A, at: -1}\n",
         "events[0].at", 4, "a number >= 0"),
        ("changes:\n  A: {project: org/project}\nevents:\n  - {upload: A, at: soon}\n",
         "events[0].at", 4, "a number >= 0"),
        ("changes:\n  A: {project: org/project}\nevents:\n"
         "  - {upload: A, at: 2}\n  - {approve: A, at: 1}\n",
         "events[1].at", 5, "earlier than events[0]'s at 2"),
        ("changes:\n  A: {project: org/project, parent: B}\n  B: {project: org/project, "
         "parent: A}\n", "changes.B.parent", 3, "git parents form a cycle"),
        ("changes:\n  A:\n    project: org/project\n    depends-on: [A, X]\n",
         "changes.A.depends-on[0]", 4, "cannot depend on itself"),
        ("changes:\n  A: {project: org/project, parent: B}\n  B: {project: org/project1}\n",
         "changes.A.parent", 2, "same project and branch"),
        ("changes:\n  A: {project: nowhere/project}\n",
         "changes.A.project", 2, "project 'nowhere/project' is not in the layout"),
        ("changes:\n  A: {project: org/project}\noutcomes:\n"
         "  - {job: project-test9, change: A, result: FAILURE}\n",
         "outcomes[0].job", 4, "job 'project-test9' is not in the layout"),
        ("changes:\n  A: {project: org/project}\noutcomes:\n"
         "  - {job: project-test1, change: Z, result: FAILURE}\n",
         "outcomes[0].change", 4, "unknown change 'Z'"),
        ("changes:\n  A: {project: org/project}\noutcomes:\n"
         "  - {job: project-test1, change: A, result: BROKEN}\n",
         "outcomes[0].result", 4, "'BROKEN' is not one of"),
        ("changes:\n  A: {project: org/project}\noutcomes:\n  - {submit: A, result: merged}\n",
         "outcomes[0].result", 4, "'merged' is not one of: 'refused'"),
        ("changes:\n  A: {project: org/project}\noutcomes:\n  - {change: A}\n",
         "outcomes[0]", 4, "an outcome is"),
        ("durations:\n  default: 1\n  project-tset1: 2\n",
         "durations.project-tset1", 3, "neither `default` nor a job"),
        ("changes:\n  A: {project: org/project}\nevents:\n  - {enqueue: A, pipeline: gaet}\n",
         "events[0].pipeline", 4, "pipeline 'gaet' is not in the layout"),
        ("changes:\n  A: {project: org/project}\n  B: {project: org/project1}\nevents:\n"
         "  - {promote: [A, B]}\n", "events[0].promote", 5, "different queues"),
        ("changez: {}\n", "changez", 1, "unknown key"),
        ("events: [upload: A\n", "", 2, "not valid YAML"),
        ("- upload: A\n", "", 1, "a scenario is a mapping"),
    ],
)
def test_invalid_scenarios(text: str, path: str, line: int, fragment: str) -> None:
    found = problems(text)
    assert any(p == path and n == line and fragment in m for p, n, m in found), found


def test_layout_errors_are_located_in_the_scenario_file() -> None:
    text = """\
name: bad layout
layout:
  pipelines:
    - name: check
      trigger: [{event: patchset-created}]
  jobs:
    - name: j1
  projects:
    - name: p
      pipelines:
        check:
          jobs: [j1, {name: j2, dependencies: [j1]}]
"""
    found = problems(text)
    assert found == [("layout.projects[0].pipelines.check.jobs[1]", 12,
                      "project 'p' pipeline 'check': job 'j2' is not defined under jobs")]
    found = problems(text.replace("trigger:", "triger:"))
    assert ("layout.pipelines[0].triger", 5,
            "unknown key (check its spelling; keys are kebab-case)") in found


def test_several_problems_are_reported_at_once_with_the_file_name() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario("changes:\n  A: {project: org/project}\nevents:\n"
                       "  - upload: X\n  - abandon: Y\n", "my-scenario.yaml")
    text = str(info.value)
    assert text.splitlines()[0] == "my-scenario.yaml: invalid scenario (2 problem(s))"
    assert "my-scenario.yaml:4: events[0].upload: unknown change 'X'" in text
    assert "my-scenario.yaml:5: events[1].abandon: unknown change 'Y'" in text


def test_missing_file() -> None:
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario("/nonexistent/scenario.yaml")


def test_a_layout_may_leave_out_what_a_simulation_does_not_need(tmp_path: Path) -> None:
    scenario = parse_scenario("""\
layout:
  pipelines:
    - {name: check, trigger: [{event: patchset-created}]}
  jobs:
    - {name: unit, nodeset: big-vm}
  projects:
    - {name: p, pipelines: {check: {jobs: [unit]}}}
changes:
  A: {project: p}
""")
    config = simulation_config(layout_data(scenario), state_dir=tmp_path)
    assert config.project("p").connection == SIM_CONNECTION  # type: ignore[union-attr]
    assert config.job("unit").labels == ["big-vm"]
    assert SIM_CONNECTION in config.connections


def test_default_layout(tmp_path: Path) -> None:
    config = simulation_config(default_layout(), state_dir=tmp_path, workflow_id_prefix="sim-1/")
    assert config.temporal.workflow_id_prefix == "sim-1/"
    check, gate = config.pipeline("check"), config.pipeline("gate")
    assert check.manager == "independent" and check.start is None
    assert [t.event for t in check.trigger] == ["patchset-created", "comment-added"]
    assert check.success.labels == {"Verified": 1} and check.failure.labels == {"Verified": -1}
    assert gate.manager == "dependent"
    assert [(t.event, t.approval) for t in gate.trigger] == [("comment-added", {"Workflow": 1})]
    assert gate.require == {"Code-Review": 2, "Workflow": 1}
    assert gate.start is not None and gate.start.labels == {"Verified": 0}
    assert gate.success.labels == {"Verified": 2} and gate.success.submit
    assert gate.failure.labels == {"Verified": -2}
    assert (gate.window, gate.window_floor, gate.window_increase_amount,
            gate.window_decrease_factor) == (20, 3, 1, 2)
    assert gate.supersedes == ["check"]
    assert [(p.name, p.queue) for p in config.projects] == [
        ("org/project", None), ("org/project1", "integrated"), ("org/project2", "integrated")]
    for project in config.projects:
        for pipeline in ("check", "gate"):
            jobs = {j.name: j.dependencies
                    for j in project.pipelines[pipeline].project_jobs()}
            expected = {"project-merge": [], "project-test1": ["project-merge"],
                        "project-test2": ["project-merge"]}
            if project.queue == "integrated":
                expected["project1-project2-integration"] = ["project-merge"]
            assert jobs == expected
    assert all(j.attempts == 3 and j.voting for j in config.jobs)


def test_check_comment_trigger_is_exactly_recheck() -> None:
    import re

    pattern = default_layout()["pipelines"][0]["trigger"][1]["comment"]
    assert re.search(pattern, "Patch Set 1:\n\nrecheck")
    assert re.search(pattern, "recheck")
    assert not re.search(pattern, "Patch Set 1:\n\nplease recheck")
    assert not re.search(pattern, "recheck now")


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_scenario_here_is_valid(path: Path) -> None:
    load_scenario(path)


# --- the command line --------------------------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    app.command()(simulate)
    return app


def test_invalid_scenario_exits_2_and_runs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("changes:\n  A: {project: org/project}\nevents:\n  - upload: B\n")
    report = tmp_path / "report.json"
    started = time.monotonic()
    result = CliRunner().invoke(_app(), [str(path), "--json", str(report)])
    assert result.exit_code == 2, result.output
    assert time.monotonic() - started < 5  # no server was started
    assert f"{path}:4: events[0].upload: unknown change 'B'" in result.output
    assert not report.exists()


def test_bad_time_scale_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("changes: {}\n")
    result = CliRunner().invoke(_app(), [str(path), "--time-scale", "0"])
    assert result.exit_code == 2
    assert "--time-scale" in result.output


def test_missing_scenario_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), [str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "file not found" in result.output


def test_the_documented_scenario_format_is_the_shared_contract() -> None:
    """docs/scenario-format.md is a verbatim copy of the shared spec (a clone has no ../shared);
    where the shared spec is at hand, the copy must not have drifted."""
    root = Path(__file__).resolve().parent.parent
    shared = root.parent / "shared" / "spec" / "scenarios.md"
    copy = (root / "docs" / "scenario-format.md").read_text()
    assert copy.startswith("# Scenarios: the `lockmaster simulate` contract")
    if shared.exists():
        assert copy == shared.read_text(), "copy ../shared/spec/scenarios.md to docs/ again"
