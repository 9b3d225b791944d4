"""The log viewer (lockmaster/web/logs_pages.py) against a real log store: a directory, and the
real log store server (`lockmaster logs serve`'s LogServer) for driver http. Line anchors,
severity classes, live offsets, traversal refused, unknown logs 404."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from lockmaster.config.models import LockmasterConfig
from lockmaster.logserver import LogServer
from lockmaster.web.app import build_app
from lockmaster.web.context import WebContext
from lockmaster.web.log_render import Classifier, split_lines
from tests.ports import free_port

LOG_DIR = "42/1042/1/check/unit/abc1234"
STAMP = "2026-12-07 10:00:00.000001 | "


def _config(root: Path, **logs: object) -> LockmasterConfig:
    return LockmasterConfig.model_validate(
        {"state_dir": str(root.parent / "state"),
         "logs": {"root": str(root), "url": "http://logs.example/", **logs}})


async def _client(config: LockmasterConfig, tmp_path: Path) -> TestClient:
    app = build_app(WebContext(config=config, state_dir=tmp_path, client=None, results=None))
    client = TestClient(TestServer(app, host="127.0.0.1", port=free_port()))
    await client.start_server()
    return client


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "logs" / LOG_DIR
    directory.mkdir(parents=True)
    return tmp_path / "logs"


@pytest_asyncio.fixture
async def web(root: Path, tmp_path: Path) -> AsyncIterator[TestClient]:
    client = await _client(_config(root), tmp_path)
    yield client
    await client.close()


def _write(root: Path, text: str, *, old: bool) -> Path:
    path = root / LOG_DIR / "job-output.txt"
    path.write_text(text)
    if old:  # a log that stopped growing long ago: its build is over
        past = time.time() - 4 * 3600
        os.utime(path, (past, past))
    return path


def test_classifier_colours_errors_warnings_debug_and_whole_tracebacks() -> None:
    classify = Classifier()
    lines = [
        "plain", "ERROR: it broke", "WARNING: careful", "DEBUG detail",
        "Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
        "    boom()", "ValueError: bad", "after", "RESULT: FAILURE", "RESULT: SUCCESS",
    ]
    got = [classify(STAMP + line) for line in lines]
    assert got == ["", "error", "warning", "debug", "error", "error", "error", "error", "",
                   "error", ""]


def test_split_lines_keeps_partial_lines_back_until_the_end() -> None:
    part = split_lines(b"one\ntwo\nthr", at_end=False, full=False)
    assert (part.lines, part.consumed, part.continued) == (["one", "two"], 8, False)
    end = split_lines(b"one\ntwo\nthr", at_end=True, full=False)
    assert (end.lines, end.consumed) == (["one", "two", "thr"], 11)
    # A line longer than the slice is handed out in pieces, never cutting a UTF-8 character.
    piece = split_lines("aé".encode()[:2], at_end=False, full=True)
    assert (piece.lines, piece.consumed, piece.continued) == (["a"], 1, True)


async def test_page_numbers_lines_with_anchors_and_severity(web: TestClient, root: Path
                                                           ) -> None:
    _write(root, f"{STAMP}start\n{STAMP}ERROR: bad <b>thing</b>\n{STAMP}WARNING: w\n", old=True)
    response = await web.get(f"/logs/{LOG_DIR}/job-output.txt")
    assert response.status == 200
    page = await response.text()
    assert '<span class="line" id="L1"><a class="ln" href="#L1">1</a>' in page
    assert 'class="line error" id="L2"' in page
    assert 'class="line warning" id="L3"' in page
    assert "&lt;b&gt;thing&lt;/b&gt;" in page and "<b>thing</b>" not in page
    assert 'data-more="0"' in page  # finished and all sent: the page does not poll
    assert 'href="http://logs.example/42/1042/1/check/unit/abc1234/job-output.txt"' in page


async def test_api_tails_a_running_log_by_offset(web: TestClient, root: Path) -> None:
    path = _write(root, f"{STAMP}one\n{STAMP}tw", old=False)
    first = await (await web.get(f"/api/logs/{LOG_DIR}/job-output.txt")).json()
    assert first["running"] is True and first["complete"] is False
    assert [line["text"] for line in first["lines"]] == [f"{STAMP}one"]
    assert first["next_offset"] == len(f"{STAMP}one\n")
    with path.open("a") as file:
        file.write(f"o\n{STAMP}ERROR three\n")
    second = await (await web.get(
        f"/api/logs/{LOG_DIR}/job-output.txt?offset={first['next_offset']}")).json()
    assert [line["text"] for line in second["lines"]] == [f"{STAMP}two", f"{STAMP}ERROR three"]
    assert [line["severity"] for line in second["lines"]] == ["", "error"]
    assert second["next_offset"] == path.stat().st_size == second["size"]
    # Nothing new: an empty answer at the same offset, still running.
    third = await (await web.get(
        f"/api/logs/{LOG_DIR}/job-output.txt?offset={second['next_offset']}")).json()
    assert third["lines"] == [] and third["next_offset"] == second["next_offset"]
    assert third["running"] is True


async def test_api_finished_log_gives_the_unterminated_last_line(web: TestClient, root: Path
                                                                 ) -> None:
    _write(root, "a\nb\nlast", old=True)
    body = await (await web.get(f"/api/logs/{LOG_DIR}/job-output.txt?offset=2")).json()
    assert [line["text"] for line in body["lines"]] == ["b", "last"]
    assert body["running"] is False and body["complete"] is True and body["next_offset"] == 8


async def test_api_small_limit_pages_through_the_log(web: TestClient, root: Path) -> None:
    _write(root, "".join(f"line {n}\n" for n in range(1, 101)), old=True)
    offset, seen = 0, []
    for _ in range(200):
        body = await (await web.get(
            f"/api/logs/{LOG_DIR}/job-output.txt?offset={offset}&limit=64")).json()
        seen.extend(line["text"] for line in body["lines"])
        offset = body["next_offset"]
        if body["complete"]:
            break
    assert seen == [f"line {n}" for n in range(1, 101)]


async def test_offset_past_the_end_is_416_and_bad_params_400(web: TestClient, root: Path
                                                             ) -> None:
    _write(root, "short\n", old=True)
    base = f"/api/logs/{LOG_DIR}/job-output.txt"
    response = await web.get(f"{base}?offset=999")
    assert response.status == 416
    assert "offset 0" in (await response.json())["hint"]
    for query in ("offset=abc", "offset=-1", "limit=0", f"limit={10**9}"):
        response = await web.get(f"{base}?{query}")
        assert response.status == 400, query
        body = await response.json()
        assert body["error"] and body["hint"], query


async def test_traversal_is_refused_with_400(web: TestClient, root: Path) -> None:
    (root.parent / "secret.txt").write_text("secret\n")
    (root / LOG_DIR / "escape").symlink_to(root.parent / "secret.txt")
    for raw in ("/api/logs/..%2Fsecret.txt", "/api/logs/42/%2E%2E/%2E%2E/secret.txt",
                "/api/logs/42//x", f"/api/logs/{LOG_DIR}/escape", "/logs/..%2Fsecret.txt"):
        response = await web.get(URL(raw, encoded=True))
        assert response.status == 400, raw
        assert "secret" not in (await response.text()).replace("secret.txt", ""), raw
    # Encoded twice, it is decoded once: a file literally named "%2e%2e", not a way out.
    response = await web.get(URL("/api/logs/%252e%252e/secret.txt", encoded=True))
    assert response.status == 404


async def test_unknown_log_is_404(web: TestClient) -> None:
    response = await web.get("/api/logs/99/9999/1/check/nope/0000000/job-output.txt")
    assert response.status == 404
    assert (await response.json())["hint"]
    page = await web.get("/logs/99/9999/1/check/nope/0000000/job-output.txt")
    assert page.status == 404
    assert "no such log" in await page.text()


async def test_directory_lists_entries_and_redirects_without_slash(web: TestClient, root: Path
                                                                  ) -> None:
    _write(root, "x\n", old=True)
    (root / LOG_DIR / "artifacts").mkdir()
    body = await (await web.get(f"/api/logs/{LOG_DIR}/")).json()
    assert [e["name"] for e in body["entries"]] == ["artifacts/", "job-output.txt"]
    response = await web.get(f"/logs/{LOG_DIR}", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == f"/logs/{LOG_DIR}/"
    page = await (await web.get(f"/logs/{LOG_DIR}/")).text()
    assert f'href="/logs/{LOG_DIR}/job-output.txt"' in page


async def test_http_driver_reads_from_the_log_store_server(root: Path, tmp_path: Path) -> None:
    _write(root, f"{STAMP}hello\n{STAMP}FATAL: gone\n", old=True)
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    server = LogServer(root, port=free_port(), token_file=token).start()
    try:
        store_url = f"http://127.0.0.1:{server.port}"
        config = _config(tmp_path / "elsewhere", store={
            "driver": "http", "url": store_url, "token_file": str(token)})
        web = await _client(config, tmp_path)
        try:
            body = await (await web.get(f"/api/logs/{LOG_DIR}/job-output.txt?offset=0")).json()
            assert [line["severity"] for line in body["lines"]] == ["", "error"]
            assert body["complete"] is True
            tail = await (await web.get(
                f"/api/logs/{LOG_DIR}/job-output.txt?offset={len(STAMP) + 6}")).json()
            assert [line["text"] for line in tail["lines"]] == [f"{STAMP}FATAL: gone"]
            missing = await web.get(f"/api/logs/{LOG_DIR}/nothing.txt")
            assert missing.status == 404
            listing = await (await web.get(f"/api/logs/{LOG_DIR}/")).json()
            assert "job-output.txt" in [e["name"] for e in listing["entries"]]
            page = await (await web.get(f"/logs/{LOG_DIR}/job-output.txt")).text()
            assert re.search(r'class="line error" id="L2"', page)
        finally:
            await web.close()
    finally:
        server.stop()


async def test_http_driver_store_down_is_502(root: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t\n")
    config = _config(root, store={"driver": "http", "url": f"http://127.0.0.1:{free_port()}",
                                  "token_file": str(token)})
    web = await _client(config, tmp_path)
    try:
        response = await web.get(f"/api/logs/{LOG_DIR}/job-output.txt")
        assert response.status == 502
        assert "did not answer" in (await response.json())["error"]
    finally:
        await web.close()


async def test_a_recorded_build_is_not_running_and_is_linked(tmp_path: Path) -> None:
    from tests.web_history import build, client, config, open_db

    db = open_db(tmp_path)
    uuid = "f00dbeef" + "1" * 24
    db.record_builds([build(uuid, "unit", "FAILURE", time.time(), number=1042)])
    log_dir = tmp_path / "logs" / "42/1042/1/check/unit/f00dbee"
    log_dir.mkdir(parents=True)
    (log_dir / "job-output.txt").write_text(f"{STAMP}ERROR x\n{STAMP}no newline")  # fresh
    other = tmp_path / "logs" / "42/1042/1/check/lint/0000000"
    other.mkdir(parents=True)
    (other / "job-output.txt").write_text(f"{STAMP}still going\n")
    web = await client(config(tmp_path), db, tmp_path)
    try:
        body = await (await web.get(
            "/api/logs/42/1042/1/check/unit/f00dbee/job-output.txt")).json()
        assert body["running"] is False and body["complete"] is True
        assert body["lines"][-1]["text"].endswith("no newline")
        page = await (await web.get("/logs/42/1042/1/check/unit/f00dbee/job-output.txt")).text()
        assert f'href="/build/{uuid}"' in page
        running = await (await web.get(
            "/api/logs/42/1042/1/check/lint/0000000/job-output.txt")).json()
        assert running["running"] is True  # no build recorded, and the log is fresh
    finally:
        await web.close()
        db.close()


def test_log_server_answers_byte_ranges(root: Path, tmp_path: Path) -> None:
    """The log store server gives a slice for a Range (the viewer's tail of an http store reads
    only what is new), 416 past the end, and the whole file without a Range."""
    import httpx

    path = _write(root, "0123456789", old=True)
    server = LogServer(root, port=free_port()).start()
    try:
        url = f"http://127.0.0.1:{server.port}/{LOG_DIR}/job-output.txt"
        part = httpx.get(url, headers={"Range": "bytes=3-5"})
        assert part.status_code == 206 and part.content == b"345"
        assert part.headers["Content-Range"] == "bytes 3-5/10"
        tail = httpx.get(url, headers={"Range": "bytes=7-"})
        assert tail.status_code == 206 and tail.content == b"789"
        past = httpx.get(url, headers={"Range": "bytes=10-20"})
        assert past.status_code == 416 and past.headers["Content-Range"] == "bytes */10"
        whole = httpx.get(url)
        assert whole.status_code == 200 and whole.content == path.read_bytes()
        missing = httpx.get(url + ".nope", headers={"Range": "bytes=0-1"})
        assert missing.status_code == 404
    finally:
        server.stop()


async def test_a_log_url_leads_to_the_viewer_and_nothing_else(web: TestClient) -> None:
    url = f"http://logs.example/{LOG_DIR}/"
    response = await web.get("/logs", params={"url": url}, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == f"/logs/{LOG_DIR}/job-output.txt"
    file_url = f"http://logs.example/{LOG_DIR}/other.txt"
    response = await web.get("/logs", params={"url": file_url}, allow_redirects=False)
    assert response.headers["Location"] == f"/logs/{LOG_DIR}/other.txt"
    for bad in ("https://evil.example/x/", "http://logs.example/", ""):
        response = await web.get("/logs", params={"url": bad}, allow_redirects=False)
        assert response.status == 400, bad


async def test_the_executors_last_line_ends_a_log_and_a_quiet_job_still_runs(
        web: TestClient, root: Path) -> None:
    path = _write(root, f"{STAMP}RESULT: SUCCESS\n", old=False)
    settling = await (await web.get(f"/api/logs/{LOG_DIR}/job-output.txt")).json()
    assert settling["running"] is True  # written just now: clean-up lines may follow
    minute = time.time() - 60
    with path.open("a") as out:
        out.write(f"{STAMP}Artifacts: none\n")
    os.utime(path, (minute, minute))
    done = await (await web.get(f"/api/logs/{LOG_DIR}/job-output.txt")).json()
    assert done["running"] is False and done["complete"] is True
    # The marker beyond the slice asked for is still found (the end is read separately).
    path.write_text("".join(f"{STAMP}line {n}\n" for n in range(2000)) + f"{STAMP}ABORTED\n")
    os.utime(path, (minute, minute))
    early = await (await web.get(f"/api/logs/{LOG_DIR}/job-output.txt?limit=100")).json()
    assert early["running"] is False and early["complete"] is False
    # A job quiet for an hour (a long compile) is still running: no last line yet.
    path.write_text(f"{STAMP}compiling\n")
    hour = time.time() - 3600
    os.utime(path, (hour, hour))
    quiet = await (await web.get(f"/api/logs/{LOG_DIR}/job-output.txt")).json()
    assert quiet["running"] is True
    # Job output that merely mentions RESULT inside a line does not end it.
    path.write_text(f"{STAMP}echo RESULT: SUCCESS\n")
    assert (await (await web.get(f"/api/logs/{LOG_DIR}/job-output.txt")).json())["running"]
