"""The pure pipeline logic: job graph, report text, trigger matching, freezing."""

from __future__ import annotations

from pathlib import Path

from lockmaster.config.loader import default_config_path, load_config
from lockmaster.model.build import BuildResult, JobSpec, Result
from lockmaster.model.change import ReviewEvent
from lockmaster.pipelines.freeze import freeze_jobs
from lockmaster.pipelines.jobgraph import JobGraph, final_result
from lockmaster.pipelines.reports import buildset_report, format_duration
from lockmaster.pipelines.triggers import requirements_met, triggered_pipelines


def spec(name: str, deps: list[str] | None = None, voting: bool = True) -> JobSpec:
    return JobSpec(name=name, run="true", dependencies=deps or [], voting=voting)


def test_graph_starts_roots_then_children_and_skips_transitively() -> None:
    graph = JobGraph([spec("a"), spec("b", ["a"]), spec("c", ["b"]), spec("d")])
    assert [j.name for j in graph.ready()] == ["a", "d"]
    graph.start("a")
    graph.start("d")
    assert graph.ready() == []
    assert graph.finish("a", Result.FAILURE) == ["b", "c"]
    graph.finish("d", Result.SUCCESS)
    assert graph.done
    assert graph.results == {"a": Result.FAILURE, "b": Result.SKIPPED, "c": Result.SKIPPED,
                             "d": Result.SUCCESS}
    assert not graph.succeeded()


def test_graph_child_waits_for_every_dependency() -> None:
    graph = JobGraph([spec("a"), spec("b"), spec("c", ["a", "b"])])
    graph.start("a")
    graph.start("b")
    graph.finish("a", Result.SUCCESS)
    assert graph.ready() == []
    graph.finish("b", Result.SUCCESS)
    assert [j.name for j in graph.ready()] == ["c"]


def test_non_voting_failure_still_succeeds_but_skipped_voting_child_fails() -> None:
    graph = JobGraph([spec("nv", voting=False), spec("ok")])
    graph.finish("nv", Result.FAILURE)
    graph.finish("ok", Result.SUCCESS)
    assert graph.succeeded()
    graph = JobGraph([spec("nv", voting=False), spec("child", ["nv"])])
    graph.finish("nv", Result.FAILURE)
    assert graph.results["child"] is Result.SKIPPED
    assert not graph.succeeded()


def test_retry_attempts_then_retry_limit() -> None:
    job = JobSpec(name="j", run="true", attempts=2)
    one = [BuildResult(build_id="1", job="j", result=Result.RETRY)]
    assert final_result(one, job) == (Result.RETRY, True)
    two = [*one, BuildResult(build_id="2", job="j", result=Result.RETRY)]
    assert final_result(two, job) == (Result.RETRY_LIMIT, False)
    assert final_result([BuildResult(build_id="3", job="j", result=Result.FAILURE)], job) == (
        Result.FAILURE, False)


def test_report_shape_is_zuuls() -> None:
    jobs = [spec("lint"), spec("docs", voting=False), spec("unit", ["lint"])]
    builds = {
        "lint": BuildResult(build_id="1", job="lint", result=Result.FAILURE, started=0, ended=75,
                            log_url="http://logs/1/"),
        "docs": BuildResult(build_id="2", job="docs", result=Result.SUCCESS, started=0, ended=2.5,
                            log_url="http://logs/2/"),
    }
    text = buildset_report("check", False, jobs,
                           {"lint": Result.FAILURE, "docs": Result.SUCCESS,
                            "unit": Result.SKIPPED}, builds)
    assert text.splitlines() == [
        "Build failed (check).",
        "",
        "- lint http://logs/1/ : FAILURE in 1m 15s",
        "- docs http://logs/2/ : SUCCESS in 2.5s (non-voting)",
        "- unit : SKIPPED",
    ]
    assert format_duration(3725) == "1h 02m 05s"


def _event(**kw: object) -> ReviewEvent:
    base = {"type": "comment-added", "connection": "local", "project": "demo/hello",
            "branch": "master", "change": 1, "patchset": 1}
    return ReviewEvent(**{**base, **kw})  # type: ignore[arg-type]


def test_triggers_match_recheck_comment_forms_and_not_others() -> None:
    config = load_config(default_config_path())
    for comment in ["recheck", "Patch Set 1:\n\nrecheck", "Patch Set 2: Code-Review+1\n\nrecheck",
                    "RECHECK "]:
        assert [p.name for p in triggered_pipelines(config, _event(comment=comment))] == [
            "check"], comment
    for comment in ["please recheck this", "recheck-all", "Patch Set 1:\n\nlooks good"]:
        assert triggered_pipelines(config, _event(comment=comment)) == [], comment
    assert [p.name for p in triggered_pipelines(config, _event(type="patchset-created"))] == [
        "check"]
    assert triggered_pipelines(config, _event(type="patchset-created", project="other")) == []


def test_requirements_and_freezing(tmp_path: Path) -> None:
    config = load_config(default_config_path())
    check = config.pipeline("check").model_copy(update={"require": {"Code-Review": 2}})
    assert not requirements_met(check, {"Code-Review": 1})
    assert requirements_met(check, {"Code-Review": 2, "Workflow": 1})
    jobs = freeze_jobs(config, "demo/hello", "check")
    assert [(j.name, j.dependencies, j.voting) for j in jobs] == [
        ("lint", [], True), ("unit", ["lint"], True), ("docs", ["lint"], False)]
    assert freeze_jobs(config, "nope/nope", "check") == []
