"""The log store (logs.store driver http): the log server takes authenticated uploads into its
root and refuses everything else; a build's log reaches it while the job runs and whole at the
end; a store that is down or refuses the token loses nothing and fails no build."""

from __future__ import annotations

import asyncio
import http.client
import logging
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from lockmaster.config.models import LocalPool
from lockmaster.config.models import LocalProvider as LocalProviderConfig
from lockmaster.execution.log_shipping import LogShipping, SpoolDelivery
from lockmaster.execution.log_upload import PENDING, LogStoreClient
from lockmaster.execution.runner import BuildRunner
from lockmaster.logserver import LogServer
from lockmaster.model.build import Result
from lockmaster.nodes.local import LocalProvider
from lockmaster.nodes.registry import NodeProviders
from tests.ports import free_port
from tests.test_build_runner import LOG_PATH, SimplePreparer, request

TOKEN = "s3cret-upload-token"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def store(tmp_path: Path, token_file: Path):  # type: ignore[no-untyped-def]
    server = LogServer(tmp_path / "store", port=0, token_file=token_file).start()
    yield server
    server.stop()


def raw(port: int, method: str, path: str, body: bytes = b"", token: str | None = TOKEN,
        headers: dict[str, str] | None = None) -> tuple[int, str]:
    """A request sent as written (no client normalizing the path)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sent = {"Content-Length": str(len(body)), **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=sent)
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    return response.status, text


def test_uploads_need_the_token_and_stay_inside_the_root(store: LogServer, tmp_path: Path
                                                         ) -> None:
    port = store.port
    root = tmp_path / "store"
    assert raw(port, "PUT", "/12/34/1/check/job/abc/job-output.txt", b"hello\n")[0] == 201
    assert (root / "12/34/1/check/job/abc/job-output.txt").read_text() == "hello\n"
    # Served back as text.
    got = httpx.get(f"http://127.0.0.1:{port}/12/34/1/check/job/abc/job-output.txt")
    assert got.status_code == 200 and got.text == "hello\n"
    assert got.headers["content-type"].startswith("text/plain")

    status, text = raw(port, "PUT", "/x/job-output.txt", b"evil", token="wrong")
    assert status == 401 and "bearer token is wrong" in text
    status, text = raw(port, "PUT", "/x/job-output.txt", b"evil", token=None)
    assert status == 401 and "no bearer token" in text
    assert not (root / "x").exists()

    outside = tmp_path / "escaped.txt"
    for path in ("/../escaped.txt", "/a/../../escaped.txt", "/%2e%2e/escaped.txt",
                 "/a/%2e%2e/%2e%2e/escaped.txt", "/a//b.txt", "/a\\..\\..\\escaped.txt",
                 "/a/./b.txt", "/dir/"):
        status, text = raw(port, "PUT", path, b"evil")
        assert status == 400, (path, status, text)
        assert "refused" in text
    assert not outside.exists()
    assert not (root / "a").exists()
    # A link inside the root does not lead a write outside it.
    (root / "link").symlink_to(tmp_path)
    status, text = raw(port, "PUT", "/link/escaped.txt", b"evil")
    assert status == 400 and "outside" in text
    assert not outside.exists()


def test_appends_at_the_stored_size_only_and_a_server_without_token_takes_nothing(
        store: LogServer, tmp_path: Path) -> None:
    port = store.port
    target = tmp_path / "store/1/log.txt"
    assert raw(port, "PUT", "/1/log.txt", b"abc", headers={"Content-Range": "bytes 0-2/*"})[0] \
        == 200
    assert raw(port, "PUT", "/1/log.txt", b"def", headers={"Content-Range": "bytes 3-5/*"})[0] \
        == 200
    assert target.read_bytes() == b"abcdef"
    # A repeated append (its answer was lost) does not append twice.
    status, text = raw(port, "PUT", "/1/log.txt", b"def", headers={"Content-Range": "bytes 3-5/*"})
    assert status == 409 and "holds 6 bytes" in text
    assert target.read_bytes() == b"abcdef"
    assert raw(port, "DELETE", "/1/")[0] == 200
    assert not target.exists()

    plain = LogServer(tmp_path / "plain", port=0).start()
    try:
        status, text = raw(plain.port, "PUT", "/1/log.txt", b"x")
    finally:
        plain.stop()
    assert status == 403 and "takes no uploads" in text
    assert not (tmp_path / "plain/1").exists()


def runner(tmp_path: Path, url: str, token_file: Path, spool: Path | None = None
           ) -> tuple[BuildRunner, LogShipping]:
    provider = LocalProvider(
        LocalProviderConfig(name="local", driver="local",
                            pools=[LocalPool(labels=["local"], max_servers=2)]),
        tmp_path / "nodes")
    spool = spool or tmp_path / "spool"
    shipping = LogShipping(LogStoreClient(url, token_file, timeout=5), spool,
                           live_interval=0.2, upload_timeout=10, retry_interval=0.2)
    return BuildRunner(NodeProviders([provider]), SimplePreparer(), spool,
                       "http://logs.example.org/", tmp_path / "work", heartbeat_interval=0.05,
                       shipping=shipping), shipping


async def test_a_running_jobs_log_is_in_the_store_before_it_ends(
        store: LogServer, tmp_path: Path, token_file: Path) -> None:
    build_runner, _ = runner(tmp_path, f"http://127.0.0.1:{store.port}", token_file)
    flag = tmp_path / "go-on"
    job = request(run=f"echo first line of a long job; artifacts=$LOCKMASTER_ARTIFACTS; "
                      f"for i in $(seq 200); do test -e {flag} && break; sleep 0.05; done; "
                      f"test -e {flag} && echo report > $artifacts/report.txt && echo done")
    build = asyncio.create_task(build_runner.run(job))
    url = f"http://127.0.0.1:{store.port}/{LOG_PATH}/job-output.txt"
    seen = ""
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and "first line of a long job" not in seen:
            response = await http.get(url)
            seen = response.text if response.status_code == 200 else ""
            await asyncio.sleep(0.1)
        assert "first line of a long job" in seen
        assert not build.done() and "RESULT" not in seen  # live: the job still runs
        flag.write_text("")
        result = await asyncio.wait_for(build, 30)
        assert result.result == Result.SUCCESS
        # The end was delivered before the result came back: whole, artifacts with it.
        final = (await http.get(url)).text
        assert "done" in final and "RESULT: SUCCESS" in final
        assert final.startswith(seen.rsplit("\n", 1)[0])
        [artifact] = result.artifacts
        assert artifact.url == f"http://logs.example.org/{LOG_PATH}/artifacts/report.txt"
        got = await http.get(f"http://127.0.0.1:{store.port}/{LOG_PATH}/artifacts/report.txt")
        assert got.text == "report\n"
    # Delivered: nothing is left in the executor's spool.
    assert list((tmp_path / "spool").rglob("*")) == []


async def test_a_store_that_is_down_gets_the_logs_later_and_the_build_succeeds(
        tmp_path: Path, token_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there yet
    build_runner, shipping = runner(tmp_path, f"http://127.0.0.1:{port}", token_file)
    with caplog.at_level(logging.WARNING):
        result = await build_runner.run(request(run="echo built while the store was down"))
    assert result.result == Result.SUCCESS
    spooled = tmp_path / "spool" / LOG_PATH
    assert (spooled / PENDING).exists() and (spooled / "job-output.txt").exists()
    assert any("not delivered to the log store" in r.getMessage() and str(spooled) in
               r.getMessage() for r in caplog.records)
    delivery = SpoolDelivery(shipping)
    assert delivery.deliver_once() == 0  # still down: kept
    assert (spooled / PENDING).exists()

    server = LogServer(tmp_path / "store", port=port, token_file=token_file).start()
    try:
        delivery.start()  # the executor's thread, as aux_servers runs it
        try:
            for _ in range(100):  # delivered within 10 s
                if not spooled.exists():
                    break
                await asyncio.sleep(0.1)
        finally:
            delivery.stop()
        async with httpx.AsyncClient() as http:
            got = await http.get(f"http://127.0.0.1:{port}/{LOG_PATH}/job-output.txt")
        assert got.status_code == 200
        assert "built while the store was down" in got.text and "RESULT: SUCCESS" in got.text
        assert not spooled.exists()
        assert not (tmp_path / "store" / LOG_PATH / PENDING).exists()  # not shipped as a log
    finally:
        server.stop()


async def test_a_wrong_token_is_401_and_a_clear_error_in_the_executor_log(
        store: LogServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    build_runner, shipping = runner(tmp_path, f"http://127.0.0.1:{store.port}", wrong)
    with caplog.at_level(logging.WARNING):
        result = await build_runner.run(request(run="echo hello"))
    assert result.result == Result.SUCCESS
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("refused the token (401" in m and str(wrong) in m and "logs.store.token-file"
               in m for m in errors), errors
    assert not (tmp_path / "store" / LOG_PATH).exists()
    assert (tmp_path / "spool" / LOG_PATH / PENDING).exists()
    # The token fixed: the spool delivers it.
    wrong.write_text(TOKEN)
    assert SpoolDelivery(shipping).deliver_once() == 1
    assert "RESULT: SUCCESS" in (tmp_path / "store" / LOG_PATH / "job-output.txt").read_text()


def check(tmp_path: Path, logs: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "lockmaster.yaml"
    config.write_text(f"state-dir: state\nlogs:\n{logs}")
    return subprocess.run([sys.executable, "-m", "lockmaster.cli.main", "config", "check",
                           str(config)], capture_output=True, text=True, timeout=60)


def test_config_check_refuses_an_http_store_it_cannot_use(tmp_path: Path) -> None:
    done = check(tmp_path, "  store:\n    driver: http\n")
    assert done.returncode == 2, done
    assert "logs.store" in done.stderr and "needs url and token-file" in done.stderr
    # The token is a secret of the executors and the log host: checked on another host (the
    # orchestrator's), its absence is a note, not an error.
    done = check(tmp_path, "  store:\n    driver: http\n    url: http://logs:8000\n"
                           "    token-file: missing-token\n")
    assert done.returncode == 0, done
    assert "note: logs.store.token-file" in done.stderr
    assert "missing-token cannot be read" in done.stderr and "put the token" in done.stderr
    (tmp_path / "token").write_text("t\n")
    done = check(tmp_path, "  root: shared\n  store:\n    driver: http\n"
                           "    url: http://logs:8000\n    token-file: token\n"
                           "    spool: shared/spool\n")
    assert done.returncode == 2 and "overlap" in done.stderr, done
    done = check(tmp_path, "  store:\n    driver: http\n    url: http://logs:8000\n"
                           "    token-file: token\n")
    assert done.returncode == 0, done


def test_a_store_answering_503_loses_nothing(tmp_path: Path, token_file: Path) -> None:
    """The store up but refusing (overloaded, disk trouble): the build is kept for later."""
    class Busy(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(503)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"busy\n")

        do_DELETE = do_PUT

        def log_message(self, *args: object) -> None:
            return

    busy = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=busy.serve_forever, daemon=True).start()
    try:
        build_runner, _ = runner(tmp_path, f"http://127.0.0.1:{busy.server_address[1]}",
                                 token_file)
        result = asyncio.run(build_runner.run(request(run="echo kept")))
    finally:
        busy.shutdown()
        busy.server_close()
    assert result.result == Result.SUCCESS
    marker = tmp_path / "spool" / LOG_PATH / PENDING
    assert "503 busy" in marker.read_text()


LOCKMASTER = str(Path(sys.executable).with_name("lockmaster"))


def test_logs_serve_runs_the_store_alone_and_an_executor_refuses_a_bad_token_file(
        tmp_path: Path, token_file: Path) -> None:
    port = free_port()
    config = tmp_path / "lockmaster.yaml"
    config.write_text(
        f"state-dir: state\nlogs:\n  root: served\n  url: http://logs.example.org\n"
        f"  serve: {{listen: 127.0.0.1, port: {port}}}\n"
        f"  store: {{driver: http, url: 'http://127.0.0.1:{port}', token-file: token}}\n")
    proc = subprocess.Popen([LOCKMASTER, "logs", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status = None
        for _ in range(100):  # up within 10 s
            try:
                status, _text = raw(port, "PUT", "/1/2/job-output.txt", b"from afar\n")
                break
            except OSError:
                time.sleep(0.1)
        assert status == 201
        assert (tmp_path / "served/1/2/job-output.txt").read_text() == "from afar\n"
        assert httpx.get(f"http://127.0.0.1:{port}/1/2/job-output.txt").text == "from afar\n"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "taking uploads" in out and str(tmp_path / "served") in out

    token_file.unlink()
    for command in (["logs", "serve"], ["worker", "executor"]):
        done = subprocess.run([LOCKMASTER, *command, "--config", str(config)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (command, done)
        assert "logs.store.token-file" in done.stderr and "cannot be read" in done.stderr


def test_the_log_server_runs_on_the_log_host_and_executors_deliver(tmp_path: Path,
                                                                   token_file: Path) -> None:
    """Driver http: an executor does not serve its spool; `all` (one host) serves the store
    and delivers; driver directory: the executor serves its own root, as before."""
    from lockmaster.config.models import LockmasterConfig
    from lockmaster.workers.aux_servers import LOG_SERVER, LOG_SPOOL, start_aux_servers

    def config(store: dict[str, object]) -> LockmasterConfig:
        return LockmasterConfig.model_validate({
            "state-dir": str(tmp_path / "state"),
            "logs": {"serve": {"port": 0}, "store": store},
            "packaging": {"clean-roots": False, "cache": {"enabled": False}}})

    http_store = config({"driver": "http", "url": "http://127.0.0.1:1",
                         "token-file": str(token_file)})
    for role, expected in (("executor", [LOG_SPOOL]), ("all", [LOG_SERVER, LOG_SPOOL]),
                           ("orchestrator", [])):
        servers = start_aux_servers(http_store, role)
        try:
            assert [r.what for r in servers.running] == expected, role
            assert servers.failed == []
        finally:
            servers.stop()
    servers = start_aux_servers(config({}), "executor")
    try:
        assert [r.what for r in servers.running] == [LOG_SERVER]
    finally:
        servers.stop()


def test_a_followed_log_ends_equal_to_the_local_one_whatever_the_store_held(
        store: LogServer, tmp_path: Path, token_file: Path) -> None:
    from lockmaster.execution.log_upload import LogFollower

    stored = tmp_path / "store/9/job-output.txt"
    stored.parent.mkdir(parents=True)
    stored.write_text("an earlier try's log, much longer than this one's start\n")
    local = tmp_path / "job-output.txt"
    local.write_text("one\n")
    follower = LogFollower(LogStoreClient(f"http://127.0.0.1:{store.port}", token_file),
                           "9/job-output.txt", local)
    follower.push()  # the first push replaces what was there
    assert stored.read_text() == "one\n"
    with local.open("a") as out:
        out.write("two\n")
    follower.push()  # appended
    assert stored.read_text() == "one\ntwo\n" and follower.sent == 8
    stored.write_text("someone else\n")  # the store lost or changed it: put whole again
    with local.open("a") as out:
        out.write("three\n")
    follower.push()
    assert stored.read_text() == "one\ntwo\nthree\n"
