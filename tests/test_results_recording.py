"""Builds and buildsets reach the results database from real check runs and a real gate (dev
server, real git, local nodes), on SQLite (the default under the state directory) and on a real
PostgreSQL reached with a password file; the recording activity without a database; the
`results:` configuration."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from temporalio.client import Client

from lockmaster.activities.results import ResultsActivities
from lockmaster.config.models import LockmasterConfig
from lockmaster.config.results import ResultsConfig, redact
from lockmaster.model.change import ChangeRef
from lockmaster.model.results import BuildRecord, RecordBuildsRequest
from lockmaster.results import ResultsDB, ResultsDBError
from lockmaster.results.connect import open_results, results_url
from lockmaster.results.queries import BuildsetFilter, get_buildset, list_buildsets
from tests.deployment import deployment, make_config, unique_project
from tests.fixtures.postgres import PostgresServer, fresh_database, postgresql_server  # noqa: F401
from tests.test_check_workflow import job, project, start
from tests.test_gate_workflow import gate_config, gate_three_with_broken_middle


async def test_a_check_run_lands_its_builds_and_buildset(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = make_config(
        tmp_path, projects=[project(name, ["build", {"name": "test", "dependencies": ["build"]}])],
        jobs=[job("build"), job("test", "exit 3")])
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        number, wid = await start(dep, name)
        outcome = await dep.outcome(wid)  # the run waits for its recordings before it ends
        run_id = (await dep.handle(wid).describe()).run_id
    assert outcome.result == "FAILURE"
    assert results_url(config).database == str(tmp_path / "state" / "results.db")
    db = open_results(config)
    try:
        [buildset] = list_buildsets(db, BuildsetFilter(project=name)).buildsets
        assert (buildset.uuid, buildset.result, buildset.pipeline) == (run_id, "FAILURE", "check")
        assert (buildset.change, buildset.patchset) == (number, 1)
        assert buildset.message == outcome.message
        assert buildset.changes_key == f"{number},1"
        found = get_buildset(db, run_id)
        assert found is not None
        recorded = {b.uuid: (b.job, b.result, b.log_url) for b in found[1]}
        assert recorded == {b.build_id: (b.job, b.result.value, b.log_url)
                            for b in outcome.builds}
        assert all(b.node_provider and b.duration is not None for b in found[1])
    finally:
        db.close()


async def test_check_runs_record_in_postgresql_with_a_password_file(
        client: Client, tmp_path: Path, postgresql_server: PostgresServer) -> None:  # noqa: F811
    server = postgresql_server
    database = fresh_database(server)
    (tmp_path / "results-password").write_text(server.password + "\n")
    name = unique_project()
    config = make_config(tmp_path, projects=[project(name, ["unit"])], jobs=[job("unit")])
    config.results = ResultsConfig(url=server.url(database, with_password=False),
                                   password_file=tmp_path / "results-password")
    assert server.password not in config.model_dump_json()  # only the file's name
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        _, wid = await start(dep, name)
        outcome = await dep.outcome(wid)
    db = open_results(config)
    try:
        assert db.dialect == "postgresql"
        [buildset] = list_buildsets(db, BuildsetFilter(project=name)).buildsets
        assert buildset.result == outcome.result == "SUCCESS"
        _, builds = get_buildset(db, buildset.uuid) or (None, [])
        assert [(b.job, b.result) for b in builds] == [("unit", "SUCCESS")]
    finally:
        db.close()


async def test_the_gate_records_every_build_and_each_item(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 0.5; test ! -f BROKEN")
    db = open_results(config)
    async with deployment(client, config) as dep:
        a, b, c = await gate_three_with_broken_middle(dep, name)
        # The queue hands its records out in batches, within RECORD_DELAY of the first.
        for _ in range(300):
            if len(list_buildsets(db, BuildsetFilter(project=name)).buildsets) == 3:
                break
            await asyncio.sleep(0.1)
    try:
        items = {s.change: s for s in list_buildsets(db, BuildsetFilter(project=name)).buildsets}
        assert {n: items[n].result for n in items} == {
            a.number: "SUCCESS", b.number: "FAILURE", c.number: "SUCCESS"}
        assert all(s.queue == name and s.pipeline == "gate" for s in items.values())
        assert (items[a.number].message or "").startswith("Build succeeded (gate).")
        assert (items[b.number].message or "").startswith("Build failed (gate).")
        _, c_builds = get_buildset(db, items[c.number].uuid) or (None, [])
        # C was tested with B ahead, then again without it (the reset): two tries at least,
        # the last one passing; the first try's builds are recorded too.
        tries = sorted({build.buildset_try for build in c_builds})
        assert len(tries) >= 2
        assert {build.result for build in c_builds if build.buildset_try == tries[-1]} == {
            "SUCCESS"}
        assert any(build.result in ("FAILURE", "CANCELED") for build in c_builds
                   if build.buildset_try < tries[-1])
        last = [build for build in c_builds if build.buildset_try == tries[-1]]
        assert all(build.changes_key in (f"{a.number},1 {c.number},1", f"{c.number},1")
                   for build in last)  # (A may have merged before C's last try started)
        assert all(f"{b.number},1" in build.changes_key for build in c_builds
                   if build.buildset_try == tries[0])
        _, b_builds = get_buildset(db, items[b.number].uuid) or (None, [])
        assert "FAILURE" in {build.result for build in b_builds}
        # C's first try had B ahead: thrown away by B's failure, counted as B's cost.
        first_try = [build for build in c_builds if build.buildset_try == tries[0]]
        assert items[b.number].restarted_behind >= len(first_try) >= 1
        assert items[a.number].restarted_behind == 0
    finally:
        db.close()


async def test_without_a_database_recording_is_a_no_op_said_once(
        caplog: pytest.LogCaptureFixture) -> None:
    activities = ResultsActivities(None, "results.enabled is false in the configuration")
    change = ChangeRef(connection="local", project="p", branch="main", number=1, patchset=1)
    request = RecordBuildsRequest(builds=[BuildRecord(
        uuid="b", buildset_uuid="s", pipeline="check", change=change, job="j",
        result="SUCCESS")])
    with caplog.at_level(logging.WARNING, logger="lockmaster.activities.results"):
        first = await activities.record_builds(request)
        second = await activities.record_builds(request)
    assert first.disabled == second.disabled == "results.enabled is false in the configuration"
    assert first.recorded == 0
    said = [r for r in caplog.records if "not recording builds" in r.getMessage()]
    assert len(said) == 1


def test_results_configuration(tmp_path: Path) -> None:
    config_file = tmp_path / "etc" / "lockmaster.yaml"
    config_file.parent.mkdir()
    config = LockmasterConfig.model_validate(
        {"state-dir": "state", "results": {"url": "sqlite:///db/results.db"}})
    config.source = config_file
    assert results_url(config).database == str(tmp_path / "etc" / "db" / "results.db")
    with pytest.raises(ValueError, match="password in clear text"):
        ResultsConfig(url="postgresql+psycopg://lm:secret@db/results")
    with pytest.raises(ValueError, match="not a database URL this supports"):
        ResultsConfig(url="mysql://lm@db/results")
    with pytest.raises(ValueError, match="password-file is for a postgresql url"):
        ResultsConfig(password_file=Path("pw"))
    assert redact("postgresql+psycopg://lm:secret@db/x") == "postgresql+psycopg://lm:***@db/x"
    missing = LockmasterConfig.model_validate({"results": {
        "url": "postgresql://lm@127.0.0.1:1/results", "password-file": str(tmp_path / "nope")}})
    with pytest.raises(ResultsDBError, match="cannot read it"):
        results_url(missing)
    off = LockmasterConfig.model_validate({"results": {"enabled": False}})
    with pytest.raises(ResultsDBError, match="disabled"):
        open_results(off)


def test_an_unreachable_database_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://lm:hunter2@127.0.0.1:1/results"
    with pytest.raises(ResultsDBError) as caught:
        ResultsDB.open(url)
    assert "hunter2" not in str(caught.value)
    assert "127.0.0.1:1/results" in str(caught.value)


async def test_a_cancelled_check_records_its_builds_canceled(client: Client,
                                                              tmp_path: Path) -> None:
    from temporalio.client import WorkflowExecutionStatus

    from tests.test_check_workflow import _wait_running

    name = unique_project()
    config = make_config(tmp_path, projects=[project(name, ["long"])],
                         jobs=[job("long", "if [ -f .patchset-2 ]; then exit 0; fi; sleep 60")])
    async with deployment(client, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        number, wid1 = await start(dep, name)
        await _wait_running(dep, wid1, "long")
        first_run = (await dep.handle(wid1).describe()).run_id
        info = await asyncio.to_thread(dep.store.new_patchset, number)
        await dep.router.route(dep.event(info))
        for _ in range(200):  # the cancelled run records before it ends
            if (await dep.handle(wid1).describe()).status != WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(0.1)
        outcome = await dep.outcome(f"check/{name}/{number}/2")
    db = open_results(config)
    try:
        sets = {s.patchset: s for s in list_buildsets(db, BuildsetFilter(project=name)).buildsets}
        assert sets[1].uuid == first_run and sets[1].result == "CANCELLED"
        assert sets[2].result == outcome.result == "SUCCESS"
        _, cancelled = get_buildset(db, first_run) or (None, [])
        assert [(b.job, b.result) for b in cancelled] == [("long", "CANCELED")]
        assert cancelled[0].start_time is not None and cancelled[0].end_time is not None
    finally:
        db.close()
