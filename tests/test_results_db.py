"""The results database (lockmaster/results) against SQLite and a real PostgreSQL started by the
tests (tests/fixtures/postgres.py): migrations, idempotent writes, completed_since paging under
concurrent writers, filters, bad filters, trends and estimates."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from lockmaster.model.build import KnownFailure
from lockmaster.model.change import ChangeRef
from lockmaster.model.results import BuildRecord, BuildsetRecord, ChangeAhead
from lockmaster.results import ResultsDB
from lockmaster.results.migrate import current, differences, head
from lockmaster.results.queries import (
    BadFilter,
    BuildFilter,
    BuildsetFilter,
    get_build,
    get_buildset,
    job_trends,
    list_builds,
    list_buildsets,
    recent_job_durations,
    reset_rate,
)
from lockmaster.results.schema import Build, BuildKnownFailure
from tests.fixtures.postgres import PostgresServer, fresh_database, postgresql_server  # noqa: F401

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'results.db'}"
    server: PostgresServer = request.getfixturevalue("postgresql_server")
    return server.url(fresh_database(server))


@pytest.fixture
def db(db_url: str) -> Iterator[ResultsDB]:
    opened = ResultsDB.open(db_url)
    yield opened
    opened.close()


def change(number: int = 1, patchset: int = 1, project: str = "org/app") -> ChangeRef:
    return ChangeRef(connection="gerrit", project=project, branch="main", number=number,
                     patchset=patchset, commit="c0ffee")


def build(uuid: str, *, job: str = "unit", result: str = "SUCCESS", started: float = T0,
          duration: float = 60.0, **extra: object) -> BuildRecord:
    fields: dict[str, object] = {
        "buildset_uuid": "bs-1", "pipeline": "check", "change": change(), "job": job,
        "result": result, "started": started, "ended": started + duration, **extra}
    return BuildRecord.model_validate({"uuid": uuid, **fields})


# --- schema and migrations ------------------------------------------------------------------------


def test_open_migrates_an_empty_database_to_head_and_again_is_a_no_op(db_url: str) -> None:
    db = ResultsDB.open(db_url)
    try:
        assert current(db.engine) == head()
        assert differences(db.engine) == []  # the migration made exactly the models' schema
        tables = set(inspect(db.engine).get_table_names())
        assert {"builds", "buildsets", "build_known_failures", "alembic_version"} <= tables
        db.record_builds([build("b1")])
    finally:
        db.close()
    again = ResultsDB.open(db_url)  # already at head: nothing changes, nothing is lost
    try:
        assert current(again.engine) == head()
        assert get_build(again, "b1") is not None
    finally:
        again.close()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    db = ResultsDB.open(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        db.close()


# --- writing once ---------------------------------------------------------------------------------


def test_recording_twice_writes_once(db: ResultsDB) -> None:
    failures = [KnownFailure(signature="oom-killer", bug="https://bugs.example/1")]
    records = [build("b1", known_failures=failures), build("b2", result="FAILURE")]
    first = db.record_builds(records)
    again = db.record_builds(records)  # a retried activity
    assert (first.recorded, first.already) == (2, 0)
    assert (again.recorded, again.already) == (0, 2)
    with db.reading() as conn:
        assert conn.scalar(select(func.count()).select_from(Build)) == 2
        assert conn.scalar(select(func.count()).select_from(BuildKnownFailure)) == 1
        seqs = sorted(conn.scalars(select(Build.seq)))
    assert seqs == [1, 2]
    buildset = BuildsetRecord(uuid="bs-1", pipeline="check", change=change(), result="FAILURE",
                              started=T0, ended=T0 + 90)
    assert db.record_buildset(buildset).recorded == 1
    assert db.record_buildset(buildset).already == 1
    assert len(list_buildsets(db, BuildsetFilter()).buildsets) == 1


def test_a_build_row_keeps_what_was_recorded(db: ResultsDB) -> None:
    ahead = [ChangeAhead(connection="gerrit", project="org/lib", number=7, patchset=2),
             ChangeAhead(connection="gerrit", project="org/app", number=1, patchset=1)]
    db.record_builds([build(
        "b1", result="FAILURE", attempt=2, voting=False, queue="integrated",
        node_provider="cloud-a", node_label="debian", node_name="n-1",
        log_url="https://logs.example/b1/", message="exit 1", changes=ahead, buildset_try=3,
        known_failures=[KnownFailure(signature="disk-full", bug="https://bugs.example/9")])])
    row = get_build(db, "b1")
    assert row is not None
    assert (row.result, row.attempt, row.voting, row.final, row.queue) == (
        "FAILURE", 2, False, True, "integrated")
    assert (row.node_provider, row.node_label, row.node_name) == ("cloud-a", "debian", "n-1")
    assert row.start_time == datetime.fromtimestamp(T0, UTC)
    assert row.duration == 60.0
    assert row.changes_key == "7,2 1,1"
    assert row.changes[0]["project"] == "org/lib"
    assert row.ref == "refs/changes/01/1/1" and row.commit == "c0ffee"
    assert row.buildset_try == 3
    assert [k.signature for k in row.known_failures] == ["disk-full"]
    assert get_build(db, "nope") is None
    with db.reading() as conn:  # the match carries the build's result (hits on failures)
        assert conn.execute(select(BuildKnownFailure.result)).scalar_one() == "FAILURE"


def test_a_retry_attempt_is_not_final(db: ResultsDB) -> None:
    db.record_builds([build("b1", result="RETRY"), build("b2", result="SUCCESS", attempt=2)])
    assert [b.uuid for b in list_builds(db, BuildFilter(final=False)).builds] == ["b1"]


# --- paging ---------------------------------------------------------------------------------------


def test_completed_since_pages_never_reread_or_skip_under_concurrent_writers(
        db: ResultsDB) -> None:
    writers, batches, per_batch = 4, 15, 3
    written: set[str] = set()
    done = threading.Event()
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            for b in range(batches):
                batch = [build(f"w{w}-{b}-{i}", started=T0 + b) for i in range(per_batch)]
                db.record_builds(batch)
                written.update(r.uuid for r in batch)
        except BaseException as exc:  # (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    seen: list[str] = []
    seqs: list[int] = []
    since = 0
    while True:
        finished = done.is_set()
        page = list_builds(db, BuildFilter(completed_since=since, limit=7))
        seen += [b.uuid for b in page.builds]
        seqs += [b.seq for b in page.builds]
        assert page.next_completed_since is not None
        since = page.next_completed_since
        if finished and not page.builds:
            break
        if not any(t.is_alive() for t in threads):
            done.set()
    for t in threads:
        t.join()
    assert errors == []
    assert len(seen) == len(set(seen)) == writers * batches * per_batch  # nothing twice
    assert set(seen) == written  # nothing skipped
    assert seqs == sorted(seqs) and seqs == list(range(1, len(seqs) + 1))


def test_newest_first_pages_with_offset(db: ResultsDB) -> None:
    db.record_builds([build(f"b{i}", started=T0 + i * 100) for i in range(5)])
    first = list_builds(db, BuildFilter(limit=2))
    assert [b.uuid for b in first.builds] == ["b4", "b3"]
    assert first.next_offset == 2
    second = list_builds(db, BuildFilter(limit=2, offset=first.next_offset))
    assert [b.uuid for b in second.builds] == ["b2", "b1"]
    last = list_builds(db, BuildFilter(limit=2, offset=4))
    assert [b.uuid for b in last.builds] == ["b0"] and last.next_offset is None


# --- filters --------------------------------------------------------------------------------------


def test_filters(db: ResultsDB) -> None:
    db.record_builds([
        build("a", job="unit", result="SUCCESS", started=T0),
        build("b", job="lint", result="FAILURE", started=T0 + 3600),
        build("c", job="unit", result="FAILURE", started=T0 + 7200, pipeline="gate",
              change=change(2, 3, "org/lib")),
        build("d", job="unit", result="SUCCESS", started=T0 + 86400,
              change=change(1, 2)),
    ])

    def uuids(**kw: object) -> list[str]:
        return sorted(b.uuid for b in list_builds(db, BuildFilter.model_validate(kw)).builds)

    assert uuids() == ["a", "b", "c", "d"]
    assert uuids(project="org/lib") == ["c"]
    assert uuids(job="unit") == ["a", "c", "d"]
    assert uuids(result="FAILURE") == ["b", "c"]
    assert uuids(pipeline="gate") == ["c"]
    assert uuids(change=1) == ["a", "b", "d"]
    assert uuids(change=1, patchset=2) == ["d"]
    start = datetime.fromtimestamp(T0 + 1800, UTC)
    assert uuids(since=start) == ["b", "c", "d"]
    assert uuids(since=start, until=datetime.fromtimestamp(T0 + 86400, UTC)) == ["b", "c"]
    assert uuids(job="unit", result="SUCCESS", project="org/app") == ["a", "d"]
    # Parsed from query parameters, as the web gives them.
    parsed = BuildFilter.parse({"job": "unit", "result": "FAILURE", "limit": "10", "pipeline": ""})
    assert [b.uuid for b in list_builds(db, parsed).builds] == ["c"]


@pytest.mark.parametrize(("params", "says"), [
    ({"limit": "5000"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"change": "abc"}, "change"),
    ({"since": "yesterday"}, "since"),
    ({"completed_since": "-1"}, "completed_since"),
    ({"colour": "red"}, "colour"),
])
def test_bad_filter_values_are_refused_saying_which(params: dict[str, str], says: str) -> None:
    with pytest.raises(BadFilter, match=says):
        BuildFilter.parse(params)


def test_bad_filter_combinations_are_refused(db: ResultsDB) -> None:
    with pytest.raises(BadFilter, match=r"since .* is not before until"):
        list_builds(db, BuildFilter(since=datetime(2026, 2, 1, tzinfo=UTC),
                                    until=datetime(2026, 1, 1, tzinfo=UTC)))
    with pytest.raises(BadFilter, match="result 'GREEN' is not one of"):
        list_builds(db, BuildFilter(result="GREEN"))
    with pytest.raises(BadFilter, match="patchset needs change"):
        list_builds(db, BuildFilter(patchset=2))
    with pytest.raises(BadFilter, match="drop offset"):
        list_builds(db, BuildFilter(completed_since=3, offset=10))
    with pytest.raises(BadFilter, match="result 'SUCCES'"):
        list_buildsets(db, BuildsetFilter(result="SUCCES"))
    assert isinstance(BadFilter("x"), ValueError)  # the web's HTTP 400


# --- buildsets, trends, estimates, resets ---------------------------------------------------------


def test_buildsets_and_their_builds(db: ResultsDB) -> None:
    db.record_builds([build("b1", buildset_uuid="item-1", buildset_try=0, result="CANCELED"),
                      build("b2", buildset_uuid="item-1", buildset_try=1),
                      build("other", buildset_uuid="item-2")])
    db.record_buildset(BuildsetRecord(uuid="item-1", pipeline="gate", queue="integrated",
                                      change=change(), result="SUCCESS", started=T0,
                                      ended=T0 + 300))
    found = get_buildset(db, "item-1")
    assert found is not None
    row, builds = found
    assert (row.result, row.queue, row.pipeline) == ("SUCCESS", "integrated", "gate")
    assert [(b.uuid, b.buildset_try) for b in builds] == [("b1", 0), ("b2", 1)]
    assert get_buildset(db, "missing") is None
    assert [s.uuid for s in list_buildsets(db, BuildsetFilter(queue="integrated")).buildsets] \
        == ["item-1"]


def test_job_trends_per_day(db: ResultsDB) -> None:
    day1, day2 = T0, T0 + 86400
    db.record_builds([
        *[build(f"d1-{i}", started=day1 + i, duration=d) for i, d in enumerate([10, 20, 30])],
        build("d1-fail", started=day1 + 50, result="FAILURE", duration=5),
        build("d1-retry", started=day1 + 60, result="RETRY", duration=1),  # not final
        build("d2-0", started=day2, duration=40),
        build("other-job", job="lint", started=day2),
    ])
    trends = job_trends(db, "unit", days=7, now=datetime.fromtimestamp(day2 + 3600, UTC))
    assert [(d.day.isoformat(), d.builds, d.successes) for d in trends.days] == [
        ("2026-11-01", 4, 3), ("2026-11-02", 1, 1)]
    first = trends.days[0]
    assert first.success_rate == 0.75
    assert (first.p50, first.p90, first.p95) == (20.0, 30.0, 30.0)
    assert trends.days[1].p50 == 40.0
    with pytest.raises(BadFilter):
        job_trends(db, "unit", days=0)


def test_recent_job_durations_are_medians_of_the_last_successes(db: ResultsDB) -> None:
    db.record_builds([
        *[build(f"old-{i}", started=T0 - 5000 + i, duration=1000) for i in range(5)],
        *[build(f"new-{i}", started=T0 + 100 + i, duration=d)
          for i, d in enumerate([50, 70, 60])],
        build("failed", started=T0 + 200, duration=5, result="FAILURE"),
        build("gate", started=T0 + 300, duration=999, pipeline="gate"),
    ])
    assert recent_job_durations(db, "org/app", "check", ["unit", "unknown"], last=3) == {
        "unit": 60.0}
    assert recent_job_durations(db, "org/app", "check", ["unit"], last=4) == {"unit": 65.0}


def test_reset_rate_is_the_fraction_of_failed_gate_items(db: ResultsDB) -> None:
    now = datetime.fromtimestamp(T0 + 3600, UTC)
    for i, result in enumerate(["SUCCESS", "FAILURE", "SUCCESS", "MERGE_CONFLICT"]):
        db.record_buildset(BuildsetRecord(
            uuid=f"item-{i}", pipeline="gate", queue="integrated", change=change(i + 1),
            result=result, started=T0, ended=T0 + 60 * i, restarted_behind=2 if i == 1 else 0))
    db.record_buildset(BuildsetRecord(uuid="long-ago", pipeline="gate", queue="integrated",
                                      change=change(9), result="FAILURE", started=T0 - 9e5,
                                      ended=T0 - 9e5))
    rate = reset_rate(db, "gate", "integrated", timedelta(hours=2), now=now)
    assert (rate.items, rate.failed, rate.restarted_builds) == (4, 2, 2)
    assert rate.rate == 0.5
    assert reset_rate(db, "gate", "other", timedelta(hours=2), now=now).rate == 0.0
    with pytest.raises(BadFilter):
        reset_rate(db, "gate", "integrated", timedelta(0))


def test_builds_restarted_behind_a_failed_gate_item_are_counted_whichever_comes_first(
        db: ResultsDB) -> None:
    """Every build of another item that had the failed item's change ahead of it was thrown
    away (the reset); counted whether it is written before or after the item's buildset."""
    one, two, three = change(1), change(2), change(3)
    states = {"with-2": [one, two, three], "without-2": [one, three]}

    def gate_build(uuid: str, state: str, queue: str = "integrated",
                   **extra: object) -> BuildRecord:
        ahead = [ChangeAhead(connection=c.connection, project=c.project, number=c.number,
                             patchset=c.patchset) for c in states[state]]
        return build(uuid, pipeline="gate", queue=queue, buildset_uuid="item-3",
                     change=three, changes=ahead, started=T0 + 10, **extra)

    db.record_builds([gate_build("before", "with-2", result="CANCELED")])
    db.record_buildset(BuildsetRecord(uuid="item-2", pipeline="gate", queue="integrated",
                                      change=two, result="FAILURE", ended=T0 + 200))
    db.record_builds([
        gate_build("after", "with-2", result="FAILURE"),
        gate_build("retested", "without-2", buildset_try=1),  # after the reset: not thrown away
        build("own", pipeline="gate", queue="integrated", buildset_uuid="item-2", change=two,
              changes=[ChangeAhead(connection="gerrit", project="org/app", number=n,
                                   patchset=1) for n in (1, 2)], started=T0),
        gate_build("elsewhere", "with-2", queue="other-queue"),
    ])
    db.record_buildset(BuildsetRecord(uuid="item-1", pipeline="gate", queue="integrated",
                                      change=one, result="SUCCESS", started=T0, ended=T0 + 150))
    rows = {s.uuid: s for s in list_buildsets(db, BuildsetFilter(pipeline="gate")).buildsets}
    assert rows["item-2"].restarted_behind == 2
    assert rows["item-1"].restarted_behind == 0
    # Reported after it left the queue, without a start: its first build's start is taken.
    db.record_buildset(BuildsetRecord(uuid="item-3", pipeline="gate", queue="integrated",
                                      change=three, result="SUCCESS", ended=T0 + 300))
    [item3] = list_buildsets(db, BuildsetFilter(change=3)).buildsets
    assert item3.start_time == datetime.fromtimestamp(T0 + 10, UTC)
    rate = reset_rate(db, "gate", "integrated", timedelta(days=1),
                      now=datetime.fromtimestamp(T0 + 300, UTC))
    assert (rate.items, rate.failed, rate.restarted_builds) == (3, 1, 2)


def test_processes_opening_a_new_database_at_once_migrate_it_once(db_url: str) -> None:
    """The orchestrator and the web server start together: both open (and migrate) it."""
    opened: list[ResultsDB] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_it() -> None:
        try:
            start.wait()
            opened.append(ResultsDB.open(db_url))
        except BaseException as exc:  # (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert all(current(db.engine) == head() for db in opened)
    finally:
        for db in opened:
            db.close()


def test_separate_processes_migrating_a_new_database_at_once_all_succeed(db_url: str) -> None:
    import subprocess
    import sys

    code = ("import sys, time; from lockmaster.results import ResultsDB; "
            "time.sleep(max(0, float(sys.argv[2]) - time.time())); "
            "ResultsDB.open(sys.argv[1]).close()")
    import time

    at = str(time.time() + 3)  # all three past their imports, then at the same moment
    procs = [subprocess.Popen([sys.executable, "-c", code, db_url, at], stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    failures = [p.communicate(timeout=120)[1] for p in procs if p.wait(timeout=120) != 0]
    assert failures == []
    db = ResultsDB.open(db_url, migrate=False)
    try:
        assert current(db.engine) == head() and differences(db.engine) == []
    finally:
        db.close()


def test_every_result_the_workflows_record_can_be_filtered_on() -> None:
    """A result the gate or the check records is never refused as a filter (HTTP 400)."""
    from lockmaster.results.queries import BUILDSET_RESULTS, RESULTS
    from lockmaster.workflows.gate_recording import FINAL_REPORTS

    assert set(FINAL_REPORTS.values()) <= BUILDSET_RESULTS
    assert {"CANCELLED", "RESTARTED", "SUCCESS", "FAILURE", "MERGE_CONFLICT", "CONFIG_ERROR",
            "NO_JOBS", "NOT_ENQUEUED"} <= BUILDSET_RESULTS
    assert "CANCELED" in RESULTS and "RETRY_LIMIT" in RESULTS
