"""The check pipeline end to end: router → CheckWorkflow on a real dev server → real git merges →
local nodes running real commands → votes and messages in the local review system."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowExecutionStatus

from lockmaster.model.build import Result
from tests.deployment import Deployment, deployment, make_config, unique_project


def job(name: str, run: str = "true", **extra: Any) -> dict[str, Any]:
    return {"name": name, "run": run, "nodeset": "local", **extra}


def project(name: str, jobs: list[Any]) -> dict[str, Any]:
    return {"name": name, "connection": "local", "pipelines": {"check": {"jobs": jobs}}}


async def start(dep: Deployment, name: str, **upload: Any) -> tuple[int, str]:
    upload.setdefault("files", {"feature.txt": "feature\n"})
    upload.setdefault("subject", "A change")
    info, actions = await dep.upload(name, **upload)
    started = [a for a in actions if a.action == "started"]
    assert len(started) == 1, actions
    assert started[0].workflow_id == f"check/{name}/{info.number}/{info.patchset}"
    return info.number, started[0].workflow_id


async def test_passing_check_votes_plus_one_with_job_lines(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = make_config(
        tmp_path,
        projects=[project(name, ["build", {"name": "test", "dependencies": ["build"]}])],
        jobs=[job("build", "test -f feature.txt && test -f README"),
              job("test", "grep -q feature feature.txt")],
    )
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        number, wid = await start(dep, name)
        outcome = await dep.outcome(wid)
        assert outcome.result == "SUCCESS"
        assert outcome.job_results == {"build": Result.SUCCESS, "test": Result.SUCCESS}
        assert outcome.changes == f"{number},1"
        reports = dep.reports(number)
        assert len(reports) == 1
        assert reports[0]["labels"] == {"Verified": 1}
        lines = reports[0]["message"].splitlines()
        assert lines[0] == "Build succeeded (check)."
        assert lines[2].startswith("- build http://logs.example.test/")
        assert " : SUCCESS in " in lines[2]
        assert lines[3].startswith("- test http://logs.example.test/")
        # The build's log was written where its URL points.
        build = next(b for b in outcome.builds if b.job == "build")
        assert build.log_url is not None
        rel = build.log_url.removeprefix("http://logs.example.test/")
        assert (config.logs_root / rel / "job-output.txt").exists()
        assert dep.store.info(number).approvals["Verified"] == 1
        # The Web UI's "current details" and summary say what the check did.
        meta = await dep.handle(wid).query("__temporal_workflow_metadata",
                                           result_type=WorkflowMetadata)
        test_build = next(b for b in outcome.builds if b.job == "test")
        assert meta.current_details.splitlines() == [
            f"**SUCCEEDED** check: {name} change {number},1",
            f"- build: SUCCESS — [log]({build.log_url})",
            f"- test: SUCCESS — [log]({test_build.log_url})"]
        assert await (await dep.handle(wid).describe()).static_summary() == (
            f"check: {name} change {number},1 (patchset-created)")


async def test_failing_job_votes_minus_one_and_skips_dependents(
    client: Client, tmp_path: Path
) -> None:
    name = unique_project()
    config = make_config(
        tmp_path,
        projects=[project(name, [
            "build",
            {"name": "unit", "dependencies": ["build"]},
            {"name": "integration", "dependencies": ["unit"]},
            "lint",
        ])],
        jobs=[job("build", "echo compiling; exit 3"), job("unit"), job("integration"), job("lint")],
    )
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        number, wid = await start(dep, name)
        outcome = await dep.outcome(wid)
        assert outcome.result == "FAILURE"
        assert outcome.job_results == {
            "build": Result.FAILURE, "unit": Result.SKIPPED,
            "integration": Result.SKIPPED, "lint": Result.SUCCESS,
        }
        # Skipped jobs never ran.
        assert sorted(b.job for b in outcome.builds) == ["build", "lint"]
        (report,) = dep.reports(number)
        assert report["labels"] == {"Verified": -1}
        assert report["message"].startswith("Build failed (check).")
        assert "- unit : SKIPPED" in report["message"]
        assert "- build http" in report["message"] and ": FAILURE in" in report["message"]
        build = next(b for b in outcome.builds if b.job == "build")
        rel = build.log_url.removeprefix("http://logs.example.test/")  # type: ignore[union-attr]
        assert "compiling" in (config.logs_root / rel / "job-output.txt").read_text()


async def test_non_voting_failure_does_not_fail_the_check(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = make_config(
        tmp_path,
        projects=[project(name, ["good", "experimental"])],
        jobs=[job("good"), job("experimental", "false", voting=False)],
    )
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        number, wid = await start(dep, name)
        outcome = await dep.outcome(wid)
        assert outcome.result == "SUCCESS"
        assert outcome.job_results["experimental"] is Result.FAILURE
        (report,) = dep.reports(number)
        assert report["labels"] == {"Verified": 1}
        assert "(non-voting)" in next(
            line for line in report["message"].splitlines() if line.startswith("- experimental")
        )


async def test_job_timeout_reports_timed_out(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = make_config(
        tmp_path,
        projects=[project(name, ["slow"])],
        jobs=[job("slow", "sleep 30", timeout=1)],
    )
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        number, wid = await start(dep, name)
        outcome = await dep.outcome(wid)
        assert outcome.result == "FAILURE"
        assert outcome.job_results == {"slow": Result.TIMED_OUT}
        assert "- slow http" in dep.reports(number)[0]["message"]
        assert ": TIMED_OUT in" in dep.reports(number)[0]["message"]


async def test_infrastructure_failure_retried_then_retry_limit(
    client: Client, tmp_path: Path
) -> None:
    name = unique_project()
    counter = tmp_path / "attempts"
    config = make_config(
        tmp_path,
        projects=[project(name, ["flaky-setup", "recovers"])],
        jobs=[
            # pre-run fails every time: RETRY, RETRY, RETRY -> RETRY_LIMIT after 3 attempts.
            job("flaky-setup", pre_run=["false"], attempts=3),
            # pre-run fails on the first attempt only: RETRY, then SUCCESS.
            job("recovers", pre_run=[f"echo x >> {counter}; test $(wc -l < {counter}) -ge 2"]),
        ],
    )
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        number, wid = await start(dep, name)
        outcome = await dep.outcome(wid)
        assert outcome.job_results == {
            "flaky-setup": Result.RETRY_LIMIT, "recovers": Result.SUCCESS,
        }
        flaky = [b for b in outcome.builds if b.job == "flaky-setup"]
        # The last attempt is recorded as RETRY_LIMIT (Zuul's build record), not a third RETRY.
        assert [b.result for b in flaky] == [Result.RETRY, Result.RETRY, Result.RETRY_LIMIT]
        assert [b.attempt for b in flaky] == [1, 2, 3]
        recovers = [b.result for b in outcome.builds if b.job == "recovers"]
        assert recovers == [Result.RETRY, Result.SUCCESS]
        assert outcome.result == "FAILURE"
        assert "- flaky-setup" in dep.reports(number)[0]["message"]
        assert "RETRY_LIMIT" in dep.reports(number)[0]["message"]


async def test_new_patchset_cancels_old_check(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    marker = tmp_path / "killed-or-not"
    config = make_config(
        tmp_path,
        projects=[project(name, ["long"])],
        jobs=[job("long", f"if [ -f .patchset-2 ]; then exit 0; fi; sleep 60; touch {marker}")],
    )
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        number, wid1 = await start(dep, name)
        await _wait_running(dep, wid1, "long")
        info = await asyncio.to_thread(dep.store.new_patchset, number)
        actions = await dep.router.route(dep.event(info))
        assert {(a.action, a.workflow_id) for a in actions} >= {
            ("cancelled", wid1), ("started", f"check/{name}/{number}/2"),
        }
        desc = await dep.handle(wid1).describe()
        for _ in range(100):
            if desc.status != WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(0.1)
            desc = await dep.handle(wid1).describe()
        assert desc.status == WorkflowExecutionStatus.CANCELED
        outcome = await dep.outcome(f"check/{name}/{number}/2")
        assert outcome.result == "SUCCESS"
        # One report only: the new patchset's. The cancelled check reported nothing.
        reports = dep.reports(number)
        assert [r["patchset"] for r in reports] == [2]
        assert not marker.exists()  # the old build's command was killed, not left running


async def test_abandon_cancels_running_check(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = make_config(tmp_path, projects=[project(name, ["long"])],
                         jobs=[job("long", "sleep 60")])
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        number, wid = await start(dep, name)
        await _wait_running(dep, wid, "long")
        info = await asyncio.to_thread(dep.store.abandon, number, author="dev")
        actions = await dep.router.route(dep.event(info, "change-abandoned"))
        assert [(a.action, a.workflow_id) for a in actions] == [("cancelled", wid)]
        for _ in range(100):
            if (await dep.handle(wid).describe()).status != WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(0.1)
        assert (await dep.handle(wid).describe()).status == WorkflowExecutionStatus.CANCELED
        assert dep.reports(number) == []


async def test_recheck_runs_again_and_duplicates_start_nothing(
    client: Client, tmp_path: Path
) -> None:
    name = unique_project()
    config = make_config(tmp_path, projects=[project(name, ["quick"])], jobs=[job("quick")])
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        info, actions = await dep.upload(name, files={"a": "a\n"}, subject="A")
        wid = actions[0].workflow_id
        assert wid is not None
        # The same patchset-created again (hook and stream-events both deliver it) while running
        # and after it finished: no second run.
        again = await dep.router.route(dep.event(info))
        assert [a.action for a in again] == ["already-running"]
        first = await dep.outcome(wid)
        again = await dep.router.route(dep.event(info))
        assert [a.action for a in again] == ["duplicate"]
        # recheck: a new run of the same workflow ID, reported again.
        recheck = await dep.comment(info.number, "recheck")
        assert [a.action for a in recheck] == ["started"]
        second = await dep.outcome(wid)
        assert second.result == first.result == "SUCCESS"
        runs = [w async for w in client.list_workflows(f'WorkflowId = "{wid}"')]
        assert len(runs) == 2
        # The same recheck comment delivered a second time: no third run.
        event = dep.event(dep.store.info(info.number), "comment-added",
                          comment="Patch Set 1:\n\nrecheck", author="dev")
        assert [a.action for a in await dep.router.route(event)] == ["duplicate"]
        # A comment that is not a recheck triggers nothing.
        other = await dep.comment(info.number, "looks good to me")
        assert [a.action for a in other] == ["ignored"]
        assert len(dep.reports(info.number)) == 2


async def test_depends_on_is_tested_with_its_dependency(client: Client, tmp_path: Path) -> None:
    lib, app = unique_project("lib"), unique_project("app")
    config = make_config(
        tmp_path,
        projects=[project(lib, ["check-lib"]), project(app, ["integration"])],
        jobs=[
            job("check-lib", "true"),
            # The app's job sees the library change merged into the library's checkout.
            job("integration",
                f"grep -q v2 $LOCKMASTER_WORKSPACE/src/{lib}/VERSION && test -f NEW_FEATURE",
                required_projects=[lib]),
        ],
    )
    async with deployment(client, config) as dep:
        dep.store.create_project(lib, {"VERSION": "v1\n"})
        dep.store.create_project(app, {"README": "app\n"})
        lib_change, _ = await dep.upload(lib, files={"VERSION": "v2\n"}, subject="Bump")
        app_change, actions = await dep.upload(
            app, files={"NEW_FEATURE": "x\n"}, subject="Use v2", depends_on=[lib_change.number]
        )
        wid = next(a.workflow_id for a in actions if a.action == "started")
        assert wid is not None
        outcome = await dep.outcome(wid)
        assert outcome.changes == f"{lib_change.number},1 {app_change.number},1"
        assert outcome.result == "SUCCESS", outcome.message


async def test_merge_conflict_reported_without_jobs(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    ran = tmp_path / "ran"
    config = make_config(tmp_path, projects=[project(name, ["quick"])],
                         jobs=[job("quick", f"touch {ran}")])
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "one\n"})
        # Two changes on the same tip edit the same line; the first merges, the second can't.
        first = await asyncio.to_thread(dep.store.upload, name, files={"README": "two\n"},
                                        subject="Two")
        second = await asyncio.to_thread(dep.store.upload, name, files={"README": "three\n"},
                                         subject="Three")
        await asyncio.to_thread(dep.store.submit, first.ref())
        actions = await dep.router.route(dep.event(second))
        wid = next(a.workflow_id for a in actions if a.action == "started")
        assert wid is not None
        outcome = await dep.outcome(wid)
        assert outcome.result == "MERGE_CONFLICT"
        assert outcome.builds == []
        assert not ran.exists()
        (report,) = dep.reports(second.number)
        assert report["labels"] == {"Verified": -1}
        assert report["message"].startswith("Merge Failed (check).")
        assert "README" in report["message"]


async def _wait_running(dep: Deployment, wid: str, job_name: str, timeout: float = 30) -> None:
    from lockmaster.model.check import CheckStatus, StatusQuery

    async def running() -> bool:
        status = await dep.handle(wid).query("status", StatusQuery(), result_type=CheckStatus)
        return any(j.name == job_name and j.state == "running" for j in status.jobs)

    for _ in range(int(timeout * 10)):
        if await running():
            await asyncio.sleep(0.5)  # let the command itself start
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{job_name} never started in {wid}")
