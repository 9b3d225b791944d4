"""Signature statistics and unclassified failures (lockmaster/web/signatures_pages.py,
signature_stats.py) over a real SQLite results database filled through the results package's
record functions, with a real signatures directory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest_asyncio
from aiohttp.test_utils import TestClient

from lockmaster.results import ResultsDB
from tests.fixtures.postgres import PostgresServer, fresh_database, postgresql_server  # noqa: F401
from tests.web_history import build, buildset, client, config, open_db

NOW = time.time()
HOUR = 3600.0
DAY = 24 * HOUR
U = "0" * 28


def _fill(db) -> None:  # type: ignore[no-untyped-def]
    db.record_builds([
        # net-timeout: two builds of one gate item (one reset, 5 restarted), one of another
        # (one reset, 3 restarted), one in check (no reset).
        build("g1a" + U + "0", "unit", "FAILURE", NOW - HOUR, number=1, pipeline="gate",
              buildset="bs-g1", queue="q", known=["net-timeout"]),
        build("g1b" + U + "0", "func", "FAILURE", NOW - HOUR, number=1, pipeline="gate",
              buildset="bs-g1", queue="q", known=["net-timeout"]),
        build("g2a" + U + "0", "unit", "TIMED_OUT", NOW - 2 * HOUR, number=2, pipeline="gate",
              buildset="bs-g2", queue="q", known=["net-timeout"]),
        build("c1a" + U + "0", "unit", "FAILURE", NOW - 3 * HOUR, number=3,
              buildset="bs-c1", known=["net-timeout"]),
        # broad: matches two successes and one failure.
        build("s1a" + U + "0", "unit", "SUCCESS", NOW - HOUR, number=4, buildset="bs-s1",
              known=["broad"]),
        build("s2a" + U + "0", "unit", "SUCCESS", NOW - HOUR, number=5, buildset="bs-s2",
              known=["broad"]),
        build("f1a" + U + "0", "lint", "FAILURE", NOW - DAY - HOUR, number=6, buildset="bs-f1",
              known=["broad"]),
        # Unclassified failures: one today, one yesterday, one long ago (outside the window).
        build("u1a" + U + "0", "lint", "FAILURE", NOW - 2 * HOUR, number=7, buildset="bs-u1"),
        build("u2a" + U + "0", "unit", "NODE_FAILURE", NOW - DAY - HOUR, number=8,
              project="org/lib", buildset="bs-u2"),
        build("u3a" + U + "0", "unit", "FAILURE", NOW - 60 * DAY, number=9, buildset="bs-u3"),
        build("ok1" + U + "0", "unit", "SUCCESS", NOW - HOUR, number=10, buildset="bs-ok"),
    ])
    db.record_buildset(buildset("bs-g1", "FAILURE", NOW - HOUR, number=1, pipeline="gate",
                                queue="q", restarted_behind=5))
    db.record_buildset(buildset("bs-g2", "FAILURE", NOW - 2 * HOUR, number=2, pipeline="gate",
                                queue="q", restarted_behind=3))
    db.record_buildset(buildset("bs-c1", "FAILURE", NOW - 3 * HOUR, number=3))


@pytest_asyncio.fixture
async def web(tmp_path: Path) -> AsyncIterator[TestClient]:
    signatures = tmp_path / "signatures"
    signatures.mkdir()
    (signatures / "net-timeout.yaml").write_text(
        "version: 1\nbug: https://bugs.example/1\ndescription: network timeout\n"
        "regex: 'Connection timed out'\n")
    (signatures / "quiet.yaml").write_text(
        "version: 1\nbug: https://bugs.example/2\nregex: 'never seen'\n")
    (signatures / "broken.yaml").write_text("version: 1\nbug: https://bugs.example/3\n"
                                            "regex: '('\n")
    db = open_db(tmp_path)
    _fill(db)
    test_client = await client(config(tmp_path, signatures={"directory": str(signatures)}),
                               db, tmp_path)
    yield test_client
    await test_client.close()
    db.close()


async def test_signature_hits_gate_cost_and_too_broad(web: TestClient) -> None:
    response = await web.get("/api/signatures")
    assert response.status == 200
    body = await response.json()
    by_name = {s["signature"]: s for s in body["signatures"]}
    net = by_name["net-timeout"]
    assert (net["hits"], net["failure_hits"], net["success_hits"]) == (4, 4, 0)
    assert (net["resets"], net["builds_restarted"]) == (2, 8)
    assert net["too_broad"] is False and net["defined"] is True
    assert net["description"] == "network timeout"
    broad = by_name["broad"]
    assert (broad["hits"], broad["success_hits"]) == (3, 2)
    assert abs(broad["success_hit_rate"] - 2 / 3) < 1e-9
    assert broad["too_broad"] is True and broad["defined"] is False  # no file for it
    assert broad["resets"] == 0
    quiet = by_name["quiet"]
    assert quiet["hits"] == 0 and quiet["defined"] is True
    assert body["signatures"][0]["signature"] == "net-timeout"  # most costly first
    assert len(body["errors"]) == 1 and "broken.yaml" in body["errors"][0]


async def test_too_broad_threshold_and_window(web: TestClient) -> None:
    loose = await (await web.get("/api/signatures?too_broad=0.9")).json()
    assert not any(s["too_broad"] for s in loose["signatures"])
    since = datetime.fromtimestamp(NOW - 12 * HOUR, UTC).isoformat()
    recent = await (await web.get("/api/signatures?" + urlencode({"since": since}))).json()
    broad = {s["signature"]: s for s in recent["signatures"]}["broad"]
    assert (broad["hits"], broad["failure_hits"]) == (2, 0)  # the old failure is outside


async def test_unclassified_failures_and_rate(web: TestClient) -> None:
    body = await (await web.get("/api/failures")).json()
    assert [f["uuid"][:3] for f in body["failures"]] == ["u1a", "u2a"]
    first = body["failures"][0]
    assert first["log_view"] == "/logs/07/7/1/check/lint/u1a0000/job-output.txt"
    assert first["url"] == "/build/u1a" + U + "0"
    # Failed builds in the window: g1a g1b g2a c1a f1a u1a u2a = 7, of which 5 classified.
    assert body["totals"] == {"failed": 7, "classified": 5, "rate": 5 / 7}
    assert sum(d["failed"] for d in body["classification"]) == 7
    for day in body["classification"]:
        assert day["rate"] == day["classified"] / day["failed"]
    scoped = await (await web.get("/api/failures?project=org/lib")).json()
    assert [f["uuid"][:3] for f in scoped["failures"]] == ["u2a"]
    paged = await (await web.get("/api/failures?limit=1")).json()
    assert len(paged["failures"]) == 1 and paged["next_offset"] == 1
    since = datetime.fromtimestamp(NOW - 90 * DAY, UTC).isoformat()
    old = await (await web.get("/api/failures?" + urlencode({"since": since}))).json()
    assert [f["uuid"][:3] for f in old["failures"]] == ["u1a", "u2a", "u3a"]


async def test_bad_parameters_are_400(web: TestClient) -> None:
    for path in ("/api/signatures?since=soon", "/api/signatures?too_broad=2",
                 "/api/signatures?colour=red", "/api/failures?limit=0",
                 "/api/failures?offset=x", "/api/failures?since=2026-12-05&until=2026-12-01",
                 "/api/failures?job_name=x", "/api/signatures?until=0001-01-02",
                 "/api/failures?job=a%00b"):
        response = await web.get(path)
        assert response.status == 400, path
        body = await response.json()
        assert body["error"].startswith("bad parameters") and body["hint"], path
    assert (await web.get("/signatures?too_broad=-1")).status == 400
    assert (await web.get("/failures?limit=abc")).status == 400


async def test_pages(web: TestClient) -> None:
    page = await web.get("/signatures")
    assert page.status == 200
    text = await page.text()
    assert "net-timeout" in text and 'class="too-broad"' in text and "broken.yaml" in text
    failures = await web.get("/failures")
    assert failures.status == 200
    text = await failures.text()
    assert "<svg" in text and "u1a" in text and "71% classified" in text


async def test_without_a_results_database_503(tmp_path: Path) -> None:
    test_client = await client(config(tmp_path), None, tmp_path)
    try:
        assert (await test_client.get("/api/signatures")).status == 503
        assert (await test_client.get("/failures")).status == 503
    finally:
        await test_client.close()


async def test_on_postgresql(tmp_path: Path,
                             postgresql_server: PostgresServer) -> None:  # noqa: F811
    """The same numbers from PostgreSQL (its days are computed in UTC by another function),
    and the log viewer's build lookup by uuid range there."""
    db = ResultsDB.open(postgresql_server.url(fresh_database(postgresql_server)))
    _fill(db)
    test_client = await client(config(tmp_path), db, tmp_path)
    try:
        signatures = await (await test_client.get("/api/signatures")).json()
        net = {s["signature"]: s for s in signatures["signatures"]}["net-timeout"]
        assert (net["hits"], net["resets"], net["builds_restarted"]) == (4, 2, 8)
        failures = await (await test_client.get("/api/failures")).json()
        assert failures["totals"] == {"failed": 7, "classified": 5, "rate": 5 / 7}
        assert [f["uuid"][:3] for f in failures["failures"]] == ["u1a", "u2a"]
        log = tmp_path / "logs" / "07/7/1/check/lint/u1a0000/job-output.txt"
        log.parent.mkdir(parents=True)
        log.write_text("x\n")
        body = await (await test_client.get(
            "/api/logs/07/7/1/check/lint/u1a0000/job-output.txt")).json()
        assert body["running"] is False  # its build is recorded
        page = await (await test_client.get(
            "/logs/07/7/1/check/lint/u1a0000/job-output.txt")).text()
        assert 'href="/build/u1a' in page
    finally:
        await test_client.close()
        db.close()
