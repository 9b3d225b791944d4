"""Known failures end to end: the executor matches a build's logs right after the build (also
when the logs are shipped to the http store and the local copy goes), the check's report names
the known bug in the failed job's line (Zuul's shape kept), the gate's report line too, and the
BuildResult carries every match (a success's too, never reported)."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client

from lockmaster.config.signatures import SignaturesConfig
from lockmaster.model.build import BuildResult, JobSpec, KnownFailure, Result
from lockmaster.pipelines.reports import buildset_report, job_line
from lockmaster.signatures.library import SignatureLibrary
from tests.deployment import deployment, make_config, unique_project
from tests.test_build_runner import request
from tests.test_check_workflow import job, project, start
from tests.test_log_store import runner, store, token_file  # noqa: F401  (fixtures)

BUG = "https://bugs.launchpad.net/bugs/1253896"
SSH = ("version: 1\nbug: https://bugs.launchpad.net/bugs/1253896\n"
       "regex: 'SSHTimeout: Connection to the .* via SSH timed out'\n")
BROAD = "version: 1\nbug: https://bugs.example.test/broad\nregex: 'Job: '\n"


def signatures(tmp_path: Path) -> Path:
    directory = tmp_path / "signatures"
    directory.mkdir()
    (directory / "1253896.yaml").write_text(SSH)
    (directory / "broad.yaml").write_text(BROAD)  # matches every job's header
    return directory


def test_report_line_names_the_known_bug_on_failures_only() -> None:
    spec = JobSpec(name="tempest", run="x")
    known = [KnownFailure(signature="1253896", bug=BUG)]
    failed = BuildResult(build_id="b", job="tempest", result=Result.FAILURE,
                         log_url="http://logs/1/", started=0.0, ended=62.0,
                         known_failures=known)
    assert job_line(spec, Result.FAILURE, failed) == (
        f"- tempest http://logs/1/ : FAILURE in 1m 02s (known failure: {BUG})")
    passed = failed.model_copy(update={"result": Result.SUCCESS})
    assert job_line(spec, Result.SUCCESS, passed) == "- tempest http://logs/1/ : SUCCESS in 1m 02s"
    two = failed.model_copy(update={"known_failures": [
        *known, KnownFailure(signature="x", bug="https://b/2"), KnownFailure(signature="y",
                                                                           bug=BUG)]})
    assert job_line(spec, Result.FAILURE, two).endswith(f"(known failure: {BUG}, https://b/2)")
    report = buildset_report("gate", False, [spec], {"tempest": Result.FAILURE},
                             {"tempest": failed})
    assert report.splitlines()[0] == "Build failed (gate)."
    assert report.splitlines()[2].endswith(f"(known failure: {BUG})")


async def test_matched_before_the_logs_leave_for_the_http_store(
        store, tmp_path: Path, token_file: Path) -> None:  # noqa: F811
    build_runner, _ = runner(tmp_path, f"http://127.0.0.1:{store.port}", token_file)
    build_runner.signatures = SignatureLibrary(signatures(tmp_path), max_bytes=65536)
    result = await build_runner.run(request(
        run="echo 'SSHTimeout: Connection to the 10.0.0.5 via SSH timed out.'; exit 1"))
    assert result.result is Result.FAILURE
    assert [k.signature for k in result.known_failures] == ["1253896", "broad"]
    assert list((tmp_path / "spool").rglob("*")) == []  # shipped, the local copy gone
    passed = await build_runner.run(request(build_id="b2", run="echo fine"))
    assert passed.result is Result.SUCCESS
    assert [k.signature for k in passed.known_failures] == ["broad"]  # recorded: too broad


async def test_check_report_names_the_known_bug(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = make_config(
        tmp_path,
        projects=[project(name, ["tempest", "lint"])],
        jobs=[job("tempest", "echo 'tempest.lib.exceptions.SSHTimeout: Connection to the "
                             "172.24.5.3 via SSH timed out.'; exit 1"),
              job("lint", "echo clean")],
    )
    config.signatures = SignaturesConfig(directory=signatures(tmp_path))
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        number, wid = await start(dep, name)
        outcome = await dep.outcome(wid)
        assert outcome.result == "FAILURE"
        (report,) = dep.reports(number)
        lines = report["message"].splitlines()
        tempest = next(line for line in lines if line.startswith("- tempest "))
        assert tempest.startswith("- tempest http://logs.example.test/")
        assert " : FAILURE in " in tempest
        assert tempest.endswith(f"(known failure: {BUG}, https://bugs.example.test/broad)")
        lint = next(line for line in lines if line.startswith("- lint "))
        assert "known failure" not in lint
        builds = {b.job: b for b in outcome.builds}
        assert builds["tempest"].known_failures == [
            KnownFailure(signature="1253896", bug=BUG),
            KnownFailure(signature="broad", bug="https://bugs.example.test/broad")]
        # The success's match is recorded (the signature is too broad), not reported.
        assert [k.signature for k in builds["lint"].known_failures] == ["broad"]
