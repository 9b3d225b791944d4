"""Build history API and pages (lockmaster/web/builds_pages.py) over a real SQLite results
database filled through ResultsDB.record_builds / record_buildset."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest_asyncio
from aiohttp.test_utils import TestClient

from tests.web_history import build, buildset, client, config, open_db

NOW = time.time()
HOUR = 3600.0
DAY = 24 * HOUR


def _records() -> tuple[list, list]:
    builds = [
        build("a1" + "0" * 30, "unit", "SUCCESS", NOW - 1 * HOUR, number=101, buildset="bs-a",
              duration=100),
        build("a2" + "0" * 30, "lint", "FAILURE", NOW - 2 * HOUR, number=101, buildset="bs-a",
              known=["flaky-net"]),
        build("b1" + "0" * 30, "unit", "FAILURE", NOW - 1 * DAY - HOUR, number=102,
              buildset="bs-b", pipeline="gate", queue="integrated"),
        build("c1" + "0" * 30, "unit", "SUCCESS", NOW - 2 * DAY - HOUR, number=103,
              project="org/lib", buildset="bs-c", duration=300),
        build("c2" + "0" * 30, "unit", "SUCCESS", NOW - 3 * DAY - HOUR, number=104,
              project="org/lib", buildset="bs-d", duration=200),
    ]
    buildsets = [
        buildset("bs-a", "FAILURE", NOW - 1 * HOUR, number=101),
        buildset("bs-b", "FAILURE", NOW - 1 * DAY, number=102, pipeline="gate",
                 queue="integrated", restarted_behind=4),
        buildset("bs-c", "SUCCESS", NOW - 2 * DAY, number=103),
    ]
    return builds, buildsets


@pytest_asyncio.fixture
async def web(tmp_path: Path) -> AsyncIterator[TestClient]:
    db = open_db(tmp_path)
    builds, buildsets = _records()
    db.record_builds(builds)
    for record in buildsets:
        db.record_buildset(record)
    test_client = await client(config(tmp_path), db, tmp_path)
    yield test_client
    await test_client.close()
    db.close()


async def _uuids(web: TestClient, query: str) -> list[str]:
    response = await web.get(f"/api/builds?{query}")
    assert response.status == 200, await response.text()
    return [b["uuid"][:2] for b in (await response.json())["builds"]]


async def test_builds_filters(web: TestClient) -> None:
    assert await _uuids(web, "") == ["a1", "a2", "b1", "c1", "c2"]  # newest first
    assert await _uuids(web, "project=org/lib") == ["c1", "c2"]
    assert await _uuids(web, "change=101") == ["a1", "a2"]
    assert await _uuids(web, "pipeline=gate") == ["b1"]
    assert await _uuids(web, "job=lint") == ["a2"]
    assert await _uuids(web, "result=FAILURE") == ["a2", "b1"]
    assert await _uuids(web, "job=unit&result=SUCCESS&project=org/app") == ["a1"]
    since = datetime.fromtimestamp(NOW - 1.5 * DAY, UTC).isoformat()
    until = datetime.fromtimestamp(NOW - 1.5 * HOUR, UTC).isoformat()
    assert await _uuids(web, urlencode({"since": since, "until": until})) == ["a2", "b1"]
    assert await _uuids(web, "project=nobody") == []


async def test_build_rows_link_to_the_log_viewer_and_known_failures(web: TestClient) -> None:
    body = await (await web.get("/api/builds?job=lint")).json()
    row = body["builds"][0]
    assert row["log_view"] == "/logs/01/101/1/check/lint/a200000/job-output.txt"
    assert row["url"] == "/build/a2" + "0" * 30
    assert row["known_failures"] == [{"signature": "flaky-net",
                                      "bug": "https://bugs.example/flaky-net"}]


async def test_paging_by_offset_and_completed_since(web: TestClient) -> None:
    seen, offset = [], 0
    while offset is not None:
        body = await (await web.get(f"/api/builds?limit=2&offset={offset}")).json()
        seen += [b["uuid"][:2] for b in body["builds"]]
        offset = body["next_offset"]
    assert seen == ["a1", "a2", "b1", "c1", "c2"]
    # completed_since: oldest written first; the cursor passes through.
    first = await (await web.get("/api/builds?completed_since=0&limit=3")).json()
    assert len(first["builds"]) == 3
    cursor = first["next_completed_since"]
    assert cursor == first["builds"][-1]["seq"]
    rest = await (await web.get(f"/api/builds?completed_since={cursor}&limit=3")).json()
    assert len(rest["builds"]) == 2
    assert {b["seq"] for b in first["builds"]}.isdisjoint(b["seq"] for b in rest["builds"])
    empty = await (await web.get(
        f"/api/builds?completed_since={rest['next_completed_since']}")).json()
    assert empty["builds"] == [] and empty["next_completed_since"] == rest[
        "next_completed_since"]


async def test_bad_filters_are_400_with_error_and_hint(web: TestClient) -> None:
    for query in ("result=BOGUS", "change=abc", "since=yesterday", "limit=0", "limit=5000",
                  "offset=-1", "colour=red", "patchset=2",
                  "since=2026-12-05&until=2026-12-01", "completed_since=3&offset=5",
                  # Beyond what the columns hold, or text PostgreSQL refuses: 400, not 500.
                  "change=99999999999999999999", "completed_since=99999999999999999999",
                  "project=a%00b"):
        response = await web.get(f"/api/builds?{query}")
        assert response.status == 400, query
        body = await response.json()
        assert body["error"].startswith("bad filter"), (query, body)
        assert "since" in body["hint"], query
    response = await web.get("/api/buildsets?result=SKIPPED")
    assert response.status == 400


async def test_one_build_and_unknown_uuid(web: TestClient) -> None:
    found = await web.get("/api/builds/" + "b1" + "0" * 30)
    assert found.status == 200
    body = await found.json()
    assert (body["job"], body["result"], body["queue"]) == ("unit", "FAILURE", "integrated")
    missing = await web.get("/api/builds/no-such-build")
    assert missing.status == 404
    assert "no-such-build" in (await missing.json())["error"]
    assert (await web.get("/api/builds/x%00y")).status == 404


async def test_buildsets_list_and_one(web: TestClient) -> None:
    body = await (await web.get("/api/buildsets?result=FAILURE")).json()
    assert [s["uuid"] for s in body["buildsets"]] == ["bs-a", "bs-b"]
    one = await (await web.get("/api/buildsets/bs-a")).json()
    assert one["result"] == "FAILURE"
    assert sorted(b["job"] for b in one["builds"]) == ["lint", "unit"]
    assert (await web.get("/api/buildsets/bs-nope")).status == 404


async def test_job_trends(web: TestClient) -> None:
    body = await (await web.get("/api/jobs/unit/trends?days=7")).json()
    assert body["job"] == "unit"
    by_day = {d["day"]: d for d in body["days"]}
    assert sum(d["builds"] for d in by_day.values()) == 4
    assert sum(d["successes"] for d in by_day.values()) == 3
    durations = sorted(d["p50"] for d in by_day.values() if d["p50"] is not None)
    assert durations == [100, 200, 300]
    scoped = await (await web.get("/api/jobs/unit/trends?project=org/lib")).json()
    assert sum(d["builds"] for d in scoped["days"]) == 2
    for query in ("days=0", "days=abc", "days=400", "colour=red"):
        response = await web.get(f"/api/jobs/unit/trends?{query}")
        assert response.status == 400, query
        assert (await response.json())["hint"]
    # A job with builds, none in the window: empty days; a job nobody knows: 404.
    quiet = await web.get("/api/jobs/unit/trends?project=org/nothing")
    assert quiet.status == 200 and (await quiet.json())["days"] == []
    unknown = await web.get("/api/jobs/no-such-job/trends")
    assert unknown.status == 404
    assert "no-such-job" in (await unknown.json())["error"]
    assert (await web.get("/job/no-such-job")).status == 404


async def test_pages(web: TestClient) -> None:
    builds = await web.get("/builds?project=%3Cscript%3E")
    assert builds.status == 200
    text = await builds.text()
    assert 'id="filters"' in text and "history.js" in text
    assert "&lt;script&gt;" in text and "<script>" not in text.split("</head>")[1]
    assert (await web.get("/buildsets")).status == 200
    page = await web.get("/build/" + "a2" + "0" * 30)
    assert page.status == 200
    text = await page.text()
    assert 'href="/logs/01/101/1/check/lint/a200000/job-output.txt"' in text
    assert 'href="https://bugs.example/flaky-net"' in text
    assert (await web.get("/build/unknown")).status == 404
    buildset_page = await web.get("/buildset/bs-b")
    assert buildset_page.status == 200
    assert "builds restarted behind" in await buildset_page.text()
    assert (await web.get("/buildset/unknown")).status == 404
    job = await web.get("/job/unit")
    assert job.status == 200
    text = await job.text()
    assert text.count("<svg") == 2 and "<polyline" in text
    assert (await web.get("/job/unit?days=0")).status == 400


async def test_without_a_results_database_503(tmp_path: Path) -> None:
    test_client = await client(config(tmp_path), None, tmp_path)
    try:
        response = await test_client.get("/api/builds")
        assert response.status == 503
        assert "results.url" in (await response.json())["hint"]
        assert (await test_client.get("/build/x")).status == 503
    finally:
        await test_client.close()


def test_every_recorded_buildset_result_is_offered_by_the_filter() -> None:
    """The gate's and the check's recorded outcomes all appear in the pages' result filter."""
    from lockmaster.model.results import BUILDSET_RESULTS
    from lockmaster.web import builds_pages
    from lockmaster.workflows.gate_recording import FINAL_REPORTS

    assert set(FINAL_REPORTS.values()) <= set(BUILDSET_RESULTS)
    assert {"CANCELLED", "RESTARTED"} <= set(builds_pages._BUILDSET_RESULTS)
