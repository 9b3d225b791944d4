"""The check pipeline's job graph on the real dev server: artifacts flow from a job to the jobs
that depend on it (and not to others), and a job is stopped when a job it is `aborted-by` fails
(seed 003: a failed install test aborts the system test)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from temporalio.client import Client

from lockmaster.model.build import Result
from tests.deployment import deployment, make_config, unique_project


async def test_artifacts_reach_dependent_jobs_only(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    seen = tmp_path / "seen"
    seen.mkdir()
    make = 'mkdir -p "$LOCKMASTER_ARTIFACTS/repo" && echo deb > "$LOCKMASTER_ARTIFACTS/repo/x"'
    show = f'cp "$LOCKMASTER_ARTIFACTS_FILE" {seen}/"$LOCKMASTER_JOB".json'
    config = make_config(
        tmp_path,
        projects=[{"name": name, "connection": "local", "pipelines": {"check": {"jobs": [
            "build", {"name": "use", "dependencies": ["build"]}, "other"]}}}],
        jobs=[{"name": "build", "run": make, "nodeset": "local"},
              {"name": "use", "run": show, "nodeset": "local"},
              {"name": "other", "run": show, "nodeset": "local"}])
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        _, actions = await dep.upload(name, files={"a": "a\n"}, subject="artifacts")
        outcome = await dep.outcome(actions[0].workflow_id or "", timeout=60)
    assert outcome.result == "SUCCESS", outcome
    [build] = [b for b in outcome.builds if b.job == "build"]
    assert [a.name for a in build.artifacts] == ["repo"]
    received = json.loads((seen / "use.json").read_text())
    assert [(a["name"], a["job"], a["url"]) for a in received] == [
        ("repo", "build", build.artifacts[0].url)]
    assert received[0]["url"].endswith("/artifacts/repo/")
    assert json.loads((seen / "other.json").read_text()) == []  # no dependency: nothing


async def test_a_failing_job_aborts_the_jobs_it_stops(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = make_config(
        tmp_path,
        projects=[{"name": name, "connection": "local", "pipelines": {"check": {"jobs": [
            "install-test", {"name": "systest", "aborted-by": ["install-test"]}]}}}],
        jobs=[{"name": "install-test", "run": "sleep 1; exit 1", "nodeset": "local"},
              {"name": "systest", "run": "sleep 60", "nodeset": "local"}])
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        info, actions = await dep.upload(name, files={"a": "a\n"}, subject="aborts")
        # Well before the 60 s system test could end by itself.
        outcome = await dep.outcome(actions[0].workflow_id or "", timeout=50)
        report = dep.reports(info.number)[-1]["message"]
    assert outcome.result == "FAILURE"
    assert outcome.job_results == {"install-test": Result.FAILURE, "systest": Result.ABORTED}
    [systest] = [b for b in outcome.builds if b.job == "systest"]
    assert systest.message == "aborted: install-test failed"
    assert "- systest " in report and ": ABORTED" in report, report


async def test_rerun_of_one_job_gets_the_artifacts_of_the_last_run(
        client: Client, tmp_path: Path) -> None:
    from lockmaster.starters.rerun import RerunError, rerun_job

    name = unique_project()
    seen = tmp_path / "seen"
    seen.mkdir()
    make = 'mkdir -p "$LOCKMASTER_ARTIFACTS/repo" && echo deb > "$LOCKMASTER_ARTIFACTS/repo/x"'
    use = f'cp "$LOCKMASTER_ARTIFACTS_FILE" {seen}/use-$(date +%s%N).json'
    config = make_config(
        tmp_path,
        projects=[{"name": name, "connection": "local", "pipelines": {"check": {"jobs": [
            "build", {"name": "use", "dependencies": ["build"]}]}}}],
        jobs=[{"name": "build", "run": make, "nodeset": "local"},
              {"name": "use", "run": use, "nodeset": "local"}])
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        info, actions = await dep.upload(name, files={"a": "a\n"}, subject="rerun")
        wid = actions[0].workflow_id or ""
        first = await dep.outcome(wid, timeout=60)
        action = await rerun_job(client, config, dep.drivers, name, info.number, "use",
                                 by="alice", reason="flaky mirror")
        assert action.action == "started" and action.workflow_id == wid
        assert action.detail.startswith("rerun of use (asked by alice: flaky mirror) (run ")
        # Who asked for the rerun and why: in the run's memo (the Web UI shows it).
        memo = await client.get_workflow_handle(wid).describe()
        assert (await memo.memo())["by"] == "alice"
        assert (await memo.memo())["reason"] == "flaky mirror"
        again = await dep.outcome(wid, timeout=60)
        # The same with the temporal CLI: the command --dry-run prints, run as printed.
        printed = await rerun_job(client, config, dep.drivers, name, info.number, "use",
                                  dry_run=True)
        from lockmaster.temporal.devserver import temporal_binary

        command = printed.detail.replace("temporal ", f"{temporal_binary()} ", 1)
        address = client.service_client.config.target_host
        ran = await asyncio.to_thread(subprocess.run, f"{command} --address {address}",
                                      shell=True, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        third = await dep.outcome(wid, timeout=60)
        try:
            await rerun_job(client, config, dep.drivers, name, info.number, "nope")
        except RerunError as exc:
            assert "not in" in str(exc) and "build, use" in str(exc)
        else:
            raise AssertionError("an unknown job was rerun")
    assert first.result == again.result == third.result == "SUCCESS"
    assert [b.job for b in again.builds] == [b.job for b in third.builds] == ["use"]
    [build] = [b for b in first.builds if b.job == "build"]
    received = [json.loads(p.read_text()) for p in sorted(seen.iterdir())]
    assert len(received) == 3 and received[0] == received[1] == received[2]
    assert [a["url"] for a in received[1]] == [build.artifacts[0].url]
    reports = dep.reports(info.number)
    assert len(reports) == 3 and "- use " in reports[-1]["message"]
