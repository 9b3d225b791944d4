"""The codec server (lockmaster/temporal/codec_server.py, `lockmaster codec-server`): auth (bearer
token, the browser's session cookie), CORS for the Web UI's origin only, the encode/decode
protocol with and without a namespace in the path, clear 400/422s; and the real `temporal` CLI
pointed at a running `lockmaster codec-server` reading an encrypted gate's history and sending it
an update that the gate decodes and acts on."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.client import Client
from typer.testing import CliRunner

from lockmaster.cli.main import app
from lockmaster.config.codec import CodecConfig
from lockmaster.temporal.codec import EncryptionCodec, load_keys
from lockmaster.temporal.codec_server import (
    COOKIE,
    CodecServer,
    CodecServerSetupError,
    CodecService,
    codec_service,
)
from lockmaster.temporal.devserver import temporal_binary
from tests.deployment import Deployment, deployment, make_config, unique_project
from tests.ports import free_port
from tests.test_codec import encrypted_client, key_file, plain
from tests.test_gate_operator_cli import lockmaster, wait_report, write_config
from tests.test_gate_workflow import gate_config, wait_status

TOKEN = "s3cret-token-" + "x" * 20
UI = "http://localhost:8080"


def token_file(path: Path, token: str = TOKEN) -> Path:
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CodecServer]:
    codec = EncryptionCodec(load_keys(key_file(tmp_path / "keys", "k1")))
    running = CodecServer(CodecService(codec, TOKEN, [UI]), "127.0.0.1", 0).start()
    try:
        yield running
    finally:
        running.stop()


def body(*texts: str) -> str:
    return json_format.MessageToJson(Payloads(payloads=[plain(t) for t in texts]))


def payloads(response: httpx.Response) -> list:  # type: ignore[type-arg]
    return list(json_format.Parse(response.text, Payloads()).payloads)


BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def test_without_or_with_a_wrong_token_401(server: CodecServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        for path in ("/decode", "/encode", "/default/decode"):
            response = httpx.post(server.url + path, content=body("x"), headers=headers)
            assert response.status_code == 401, (path, headers)
            assert "Bearer" in response.headers["WWW-Authenticate"]
            assert "--codec-auth" in response.text


def test_encode_then_decode_round_trip_with_and_without_namespace(server: CodecServer) -> None:
    encoded = httpx.post(server.url + "/encode", content=body("hello", "world"),
                         headers=BEARER)
    assert encoded.status_code == 200, encoded.text
    assert encoded.headers["Content-Type"].startswith("application/json")
    sealed = payloads(encoded)
    assert [p.metadata["encoding"] for p in sealed] == [b"binary/encrypted"] * 2
    assert "hello" not in encoded.text
    # The CLI's `--codec-endpoint http://host/{namespace}` puts the namespace in the path.
    decoded = httpx.post(server.url + "/lockmaster/decode", content=encoded.text,
                         headers={**BEARER, "X-Namespace": "lockmaster"})
    assert decoded.status_code == 200, decoded.text
    assert payloads(decoded) == [plain("hello"), plain("world")]
    # Clear payloads come back as they are (encryption turned on with workflows running).
    mixed = httpx.post(server.url + "/decode", content=body("clear"), headers=BEARER)
    assert payloads(mixed) == [plain("clear")]


def test_malformed_bodies_400_and_undecryptable_payloads_422(
        server: CodecServer, tmp_path: Path) -> None:
    for bad in ("not json", '{"payloads": 3}', '{"payloads": [{"data": 5}]}',
                '{"other": []}'):
        response = httpx.post(server.url + "/decode", content=bad, headers=BEARER)
        assert response.status_code == 400, bad
        assert 'expected JSON {"payloads"' in response.text
    stranger = EncryptionCodec(load_keys(key_file(tmp_path / "other", "k9")))
    foreign = json_format.MessageToJson(Payloads(payloads=[stranger.encrypt(plain("x"))]))
    response = httpx.post(server.url + "/decode", content=foreign, headers=BEARER)
    assert response.status_code == 422
    assert "key id 'k9'" in response.text and "does not hold" in response.text


def test_cors_preflight_without_auth_only_for_the_web_ui_origin(server: CodecServer) -> None:
    asked = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization,content-type,x-namespace"}
    for path in ("/decode", "/encode", "/default/decode"):
        allowed = httpx.options(server.url + path, headers={"Origin": UI, **asked})
        assert allowed.status_code == 204
        assert allowed.headers["Access-Control-Allow-Origin"] == UI
        assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
        assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
        assert {h.strip().lower() for h in
                allowed.headers["Access-Control-Allow-Headers"].split(",")} == {
            "authorization", "content-type", "x-namespace"}
    other = httpx.options(server.url + "/decode", headers={"Origin": "http://evil.test",
                                                          **asked})
    assert "Access-Control-Allow-Origin" not in other.headers
    # The answers themselves carry the header for the UI's origin (and only for it), even a
    # 401, so the UI can show why.
    ok = httpx.post(server.url + "/decode", content=body("x"), headers={**BEARER, "Origin": UI})
    assert ok.headers["Access-Control-Allow-Origin"] == UI
    refused = httpx.post(server.url + "/decode", content=body("x"), headers={"Origin": UI})
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == UI
    elsewhere = httpx.post(server.url + "/decode", content=body("x"),
                           headers={**BEARER, "Origin": "http://evil.test"})
    assert "Access-Control-Allow-Origin" not in elsewhere.headers


def test_a_browser_signs_in_once_with_the_token_and_then_sends_its_cookie(
        server: CodecServer) -> None:
    form = httpx.get(server.url + "/login")
    assert form.status_code == 200 and 'name="token"' in form.text
    wrong = httpx.post(server.url + "/login", data={"token": "guess"})
    assert wrong.status_code == 401 and COOKIE not in wrong.cookies
    right = httpx.post(server.url + "/login", data={"token": TOKEN})
    assert right.status_code == 200
    cookie = right.cookies[COOKIE]
    header = right.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Strict" in header
    assert TOKEN not in header  # the cookie is a MAC, not the token
    with httpx.Client(cookies={COOKIE: cookie}) as browser:
        assert browser.post(server.url + "/decode", content=body("x")).status_code == 200
    forged = cookie.split(".")[0] + "." + "0" * 64
    with httpx.Client(cookies={COOKIE: forged}) as browser:
        assert browser.post(server.url + "/decode", content=body("x")).status_code == 401
    # Expired: the same cookie, once its time is past.
    server.service.clock = lambda: time.time() + 13 * 3600
    with httpx.Client(cookies={COOKIE: cookie}) as browser:
        assert browser.post(server.url + "/decode", content=body("x")).status_code == 401


def test_no_token_only_on_loopback_and_unusable_files_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path, projects=[], jobs=[])
    with pytest.raises(CodecServerSetupError, match=r"no codec\.key-file"):
        codec_service(config, None, [], "127.0.0.1")
    config.codec = CodecConfig(key_file=key_file(tmp_path / "keys", "k1"))
    assert codec_service(config, None, [], "127.0.0.1").token is None
    with pytest.raises(CodecServerSetupError, match=r"listening on 0\.0\.0\.0 decrypts every"):
        codec_service(config, None, [], "0.0.0.0")
    open_token = token_file(tmp_path / "token")
    open_token.chmod(0o644)
    with pytest.raises(CodecServerSetupError, match="open to other users"):
        codec_service(config, open_token, [], "0.0.0.0")
    short = token_file(tmp_path / "short", "abc")
    with pytest.raises(CodecServerSetupError, match="no token of at least 16"):
        codec_service(config, short, [], "0.0.0.0")
    assert codec_service(config, token_file(tmp_path / "t2"), [], "0.0.0.0").token == TOKEN


def test_the_command_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "lockmaster.yaml"
    config.write_text(f"state-dir: {tmp_path / 'state'}\n")
    result = CliRunner().invoke(app, ["codec-server", "--config", str(config)])
    assert result.exit_code == 2 and "no codec.key-file" in result.output
    key_file(tmp_path / "keys", "k1")
    config.write_text(f"state-dir: {tmp_path / 'state'}\ncodec:\n  key-file: keys\n")
    result = CliRunner().invoke(app, ["codec-server", "--config", str(config), "--listen",
                                      "0.0.0.0"])
    assert result.exit_code == 2 and "give it a token" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["codec-server", "--config", str(config),
                                      "--cors-origin", "http://ui/path"])
    assert result.exit_code == 2 and "is not an origin" in result.output


# --- the real temporal CLI through a running `lockmaster codec-server` -------------------


def start_codec_server(config: Path, port: int, tokens: Path) -> subprocess.Popen[str]:
    lockmaster_bin = Path(sys.executable).parent / "lockmaster"
    process = subprocess.Popen(
        [str(lockmaster_bin), "codec-server", "--config", str(config), "--port", str(port),
         "--token-file", str(tokens), "--cors-origin", UI],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError(f"codec-server exited: {process.stdout.read()}")  # type: ignore[union-attr]
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.1)
    process.kill()
    raise AssertionError("codec-server never listened")


async def in_queue(dep: Deployment, wid: str) -> None:
    """The change is in the gate (with room for a loaded machine: queries answer late)."""
    await wait_status(dep, wid, lambda status: len(status.items) == 1, timeout=120)


def payload_texts(shown: str) -> str:
    """The data of every payload in `temporal workflow show --output json` (base64 there)."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "metadata" in node and isinstance(node.get("data"), str):
                found.append(base64.b64decode(node["data"]).decode(errors="replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(shown))
    return "\n".join(found)


async def temporal(client: Client, *args: str,
                   **env: str) -> subprocess.CompletedProcess[str]:
    command = [temporal_binary(), *args, "--address", client.service_client.config.target_host,
               "--namespace", client.namespace]
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True,
                                   timeout=60, env={**os.environ, "NO_COLOR": "1", **env})


async def test_the_temporal_cli_reads_and_steers_an_encrypted_gate_through_the_codec_server(
        client: Client, tmp_path: Path) -> None:
    enqueued_why, dequeued_why = (f"MARKER-{uuid.uuid4().hex}" for _ in range(2))
    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 30")
    config.temporal = config.temporal.model_copy(
        update={"workflow_id_prefix": f"{config.temporal.task_queue_prefix}/"})
    config.codec = CodecConfig(key_file=key_file(tmp_path / "keys", "k1"))
    wid = f"{config.temporal.workflow_id_prefix}gate/{name}"
    secure = await encrypted_client(client, config)
    port = free_port()
    codec_flags = ["--codec-endpoint", f"http://127.0.0.1:{port}/{{namespace}}",
                   "--codec-auth", f"Bearer {TOKEN}"]
    async with deployment(secure, config) as dep:
        dep.store.create_project(name, {"README": "x\n"})
        change = dep.store.upload(name, files={"a": "a\n"}, subject="a")
        dep.store.vote(change.number, {"Code-Review": 2}, author="core")
        config_file = write_config(dep, client, tmp_path / "lockmaster.yaml")
        assert yaml.safe_load(config_file.read_text())["codec"]["key-file"]
        # lockmaster's own CLI encrypts with the configuration's key.
        forced = await lockmaster(config_file, "gate", "enqueue", "--change",
                                  str(change.number), "--force", "--reason", enqueued_why,
                                  "--user", "alice")
        assert forced.exit_code == 0, forced.output
        await in_queue(dep, wid)

        codec_server = start_codec_server(config_file, port, token_file(tmp_path / "token"))
        try:
            # What the server stores: without the codec the reason is nowhere to be read.
            blind = await temporal(client, "workflow", "show", "--workflow-id", wid,
                                   "--output", "json")
            assert blind.returncode == 0, blind.stderr
            assert enqueued_why not in blind.stdout + payload_texts(blind.stdout)
            # (proto JSON: metadata values in base64)
            assert base64.b64encode(b"binary/encrypted").decode() in blind.stdout
            shown = await temporal(client, "workflow", "show", "--workflow-id", wid,
                                   "--output", "json", *codec_flags)
            assert shown.returncode == 0, shown.stderr
            assert enqueued_why in payload_texts(shown.stdout)
            # The same from the environment (docs/codec.md): the README's commands, unchanged.
            by_env = await temporal(client, "workflow", "show", "--workflow-id", wid,
                                    "--output", "json", TEMPORAL_CODEC_ENDPOINT=codec_flags[1],
                                    TEMPORAL_CODEC_AUTH=codec_flags[3])
            assert by_env.returncode == 0, by_env.stderr
            assert enqueued_why in payload_texts(by_env.stdout)

            # A wrong token: the CLI cannot encode the signal; nothing reaches the gate.
            refused = await temporal(
                client, "workflow", "signal", "--workflow-id", wid, "--name", "dequeue",
                "--input", json.dumps({"project": name, "number": change.number}),
                "--codec-endpoint", f"http://127.0.0.1:{port}/{{namespace}}",
                "--codec-auth", "Bearer wrong")
            assert refused.returncode == 1
            assert "Unauthorized: a bearer token is required" in refused.stderr
            await in_queue(dep, wid)

            # The README's operator command, through the codec server: the update's input is
            # encrypted by it, the gate decrypts and acts, and its answer comes back decrypted.
            dequeued = await temporal(
                client, "workflow", "update", "execute", "--workflow-id", wid, "--name",
                "dequeue", "--input", json.dumps({"project": name, "number": change.number,
                                                  "by": "bob", "reason": dequeued_why}),
                *codec_flags)
            assert dequeued.returncode == 0, dequeued.stderr
            assert f"dequeued {change.number},1" in dequeued.stdout
            report = await wait_report(dep, change.number, dequeued_why)
            assert "bob" in report
            # Again: the gate refuses (nothing to dequeue); its reason comes back encrypted and
            # the CLI shows it decrypted.
            again = await temporal(
                client, "workflow", "update", "execute", "--workflow-id", wid, "--name",
                "dequeue", "--input", json.dumps({"project": name, "number": change.number}),
                *codec_flags)
            assert again.returncode == 1
            assert "is neither in the queue nor waiting to enter it" in again.stderr
            blind_again = await temporal(
                client, "workflow", "update", "execute", "--workflow-id", wid, "--name",
                "dequeue", "--input", json.dumps({"project": name, "number": change.number}))
            # Without the codec server: the reason stays sealed (a clear input still works:
            # encryption can be turned on while operators' scripts send clear payloads).
            assert blind_again.returncode == 1
            assert "Encoded failure" in blind_again.stderr
            assert "neither in the queue" not in blind_again.stderr
        finally:
            codec_server.send_signal(signal.SIGTERM)
            output, _ = codec_server.communicate(timeout=30)
        assert codec_server.returncode == 0, output
        assert f"codec server on http://127.0.0.1:{port}" in output
        assert "codec decode" in output and "codec encode" in output  # what it did, logged

    history = await client.get_workflow_handle(wid).fetch_history()
    stored = b"".join(e.SerializeToString() for e in history.events)
    assert enqueued_why.encode() not in stored and dequeued_why.encode() not in stored


def test_lockmaster_run_starts_it_beside_the_workers_and_warns_when_it_cannot(
        tmp_path: Path) -> None:
    from lockmaster.config.codec import CodecServeConfig
    from lockmaster.workers.aux_servers import CODEC_SERVER, start_aux_servers

    config = make_config(tmp_path, projects=[], jobs=[])
    config.logs.serve = None
    port = free_port()
    config.codec = CodecConfig(key_file=key_file(tmp_path / "keys", "k1"),
                               serve=CodecServeConfig(port=port,
                                                      token_file=token_file(tmp_path / "t")))
    said: list[str] = []
    servers = start_aux_servers(config, "all", said.append)
    try:
        assert servers.url(CODEC_SERVER) == f"http://127.0.0.1:{port}"
        assert said == []
        encoded = httpx.post(f"http://127.0.0.1:{port}/encode", content=body("x"),
                             headers=BEARER)
        assert encoded.status_code == 200
        # Only `lockmaster run` (role all) runs it; a production worker does not.
        assert start_aux_servers(config, "orchestrator", said.append).url(CODEC_SERVER) is None
        # The port taken (by the first): a warning saying what to change, nothing raised.
        again = start_aux_servers(config, "all", said.append)
        assert again.url(CODEC_SERVER) is None
        assert len(said) == 1 and said[0].startswith(f"{CODEC_SERVER} did not start: "
                                                     f"127.0.0.1:{port}")
        assert "change codec.serve.port" in said[0]
    finally:
        servers.stop()
    (tmp_path / "keys").chmod(0o644)
    broken = start_aux_servers(config, "all", said.append)
    assert broken.url(CODEC_SERVER) is None
    assert "open to other users" in said[-1] and "the rest keeps running" in said[-1]


async def test_lockmaster_runs_dev_server_ui_asks_the_codec_server(tmp_path: Path) -> None:
    """`lockmaster run` with codec.serve: the dev server's Web UI is told the codec endpoint
    (its settings API is what the UI's pages read)."""
    from lockmaster.cli.run_cmd import ui_codec_endpoint
    from lockmaster.config.codec import CodecServeConfig
    from lockmaster.temporal.devserver import DevServer

    config = make_config(tmp_path, projects=[], jobs=[])
    assert ui_codec_endpoint(config) is None
    config.codec = CodecConfig(key_file=key_file(tmp_path / "keys", "k1"),
                               serve=CodecServeConfig(port=8181))
    config.temporal.web_url = "http://localhost:8233"
    assert ui_codec_endpoint(config) == "http://localhost:8181"  # the UI's own host: same site
    config.codec.serve.listen = "10.0.0.5"  # type: ignore[union-attr]
    assert ui_codec_endpoint(config) == "http://10.0.0.5:8181"
    config.codec.serve.listen = "127.0.0.1"  # type: ignore[union-attr]
    server = DevServer(tmp_path / "temporal.db", free_port(), free_port(),
                       ui_codec_endpoint=ui_codec_endpoint(config))
    await server.start()
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(100):
                try:
                    answer = await http.get(f"http://127.0.0.1:{server.ui_port}/api/v1/settings")
                except httpx.TransportError:
                    answer = None
                if answer is not None and answer.status_code == 200:
                    break
                await asyncio.sleep(0.1)
        assert answer is not None and answer.status_code == 200
        assert answer.json()["Codec"]["Endpoint"] == "http://localhost:8181"
    finally:
        await server.stop()
