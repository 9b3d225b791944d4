"""Temporal's Web UI in a real headless browser (Debian's chromium, selenium) shows an encrypted
workflow's input decrypted by lockmaster's codec server: the dev server's UI is given the codec
endpoint as `lockmaster run` gives it, the browser calls the codec server across origins (CORS
preflight and all), and the marker the server stores only encrypted appears on the page."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from lockmaster.config.codec import CodecConfig
from lockmaster.temporal.client import data_converter
from lockmaster.temporal.codec import EncryptionCodec, load_keys
from lockmaster.temporal.codec_server import CodecServer, CodecService
from lockmaster.temporal.devserver import DevServer
from tests.deployment import make_config
from tests.ports import free_port
from tests.test_codec import key_file
from tests.test_web_browser import CHROMEDRIVER, CHROMIUM, artifacts, browser, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                       reason="needs Debian's chromium and chromium-driver (scripts/setup --test)"),
]


def look(url: str, marker: str, shot: Path) -> tuple[bool, str]:
    """Open the workflow's page; (the marker appeared, the page's text at the end)."""
    driver = browser()
    try:
        driver.get(url)
        try:
            wait_for(lambda: marker in driver.page_source, "the decrypted input", timeout=60)
            found = True
        except AssertionError:
            found = False
        driver.save_screenshot(str(shot))
        return found, driver.find_element("tag name", "body").text
    finally:
        driver.quit()


async def test_the_web_ui_shows_an_encrypted_input_decrypted(tmp_path: Path) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    config = make_config(tmp_path, projects=[], jobs=[])
    config.codec = CodecConfig(key_file=key_file(tmp_path / "keys", "k1"))
    ui_port, codec_port = free_port(), free_port()
    ui = f"http://localhost:{ui_port}"
    # The loopback codec server of `lockmaster run` (no token there: nothing else reaches it).
    codec = CodecServer(CodecService(EncryptionCodec(load_keys(tmp_path / "keys")), None, [ui]),
                        "127.0.0.1", codec_port).start()
    server = DevServer(tmp_path / "temporal.db", free_port(), ui_port,
                       ui_codec_endpoint=f"http://localhost:{codec_port}")
    await server.start()
    try:
        client = await Client.connect(server.address, data_converter=data_converter(config))
        # No worker: the started event's input is what the page shows.
        handle = await client.start_workflow("CodecProbe", {"marker": marker},
                                             id=f"codec-probe-{uuid.uuid4().hex[:8]}",
                                             task_queue="nobody-polls")
        raw = await Client.connect(server.address)
        history = await raw.get_workflow_handle(handle.id).fetch_history()
        assert marker.encode() not in history.events[0].SerializeToString()
        url = f"{ui}/namespaces/default/workflows/{handle.id}/{handle.result_run_id}/history"
        shot = artifacts() / "codec-ui.png"
        found, text = await asyncio.to_thread(look, url, marker, shot)
        print(f"screenshot: {shot}")
        assert found, f"the page never showed the decrypted input; it said: {text[:2000]}"
        await handle.terminate("test over")
    finally:
        await server.stop()
        codec.stop()


def sign_in_then_look(codec_url: str, token: str, url: str, marker: str,
                      shot: Path) -> tuple[bool, bool, str]:
    """The compose flow: the page first without a session (the codec server refuses it), then
    signed in at the codec server's /login, with the UI including credentials (as
    TEMPORAL_CODEC_INCLUDE_CREDENTIALS sets it; here through the UI's own codec settings, which
    the dev server's flags do not reach)."""
    from selenium.webdriver.common.by import By

    driver = browser()
    try:
        driver.get(url)
        script = ("localStorage.setItem('overrideRemoteCodecConfiguration', 'true');"
                  f"localStorage.setItem('endpoint', JSON.stringify('{codec_url}'));"
                  "localStorage.setItem('includeCredentials', 'true');")
        driver.execute_script(script)
        driver.get(url)
        try:
            wait_for(lambda: marker in driver.page_source, "no decryption", timeout=15)
            before = True
        except AssertionError:
            before = False
        driver.get(codec_url + "/login")
        driver.find_element(By.NAME, "token").send_keys(token)
        driver.find_element(By.TAG_NAME, "button").click()
        wait_for(lambda: "Signed in" in driver.page_source, "signed in", timeout=15)
        driver.get(url)
        try:
            wait_for(lambda: marker in driver.page_source, "the decrypted input", timeout=60)
            after = True
        except AssertionError:
            after = False
        driver.save_screenshot(str(shot))
        return before, after, driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()


async def test_with_a_token_the_browser_signs_in_once_and_the_ui_sends_its_cookie(
        tmp_path: Path) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    token = "browser-token-" + uuid.uuid4().hex
    config = make_config(tmp_path, projects=[], jobs=[])
    config.codec = CodecConfig(key_file=key_file(tmp_path / "keys", "k1"))
    ui_port, codec_port = free_port(), free_port()
    ui, codec_url = f"http://localhost:{ui_port}", f"http://localhost:{codec_port}"
    codec = CodecServer(CodecService(EncryptionCodec(load_keys(tmp_path / "keys")), token,
                                     [ui]), "127.0.0.1", codec_port).start()
    server = DevServer(tmp_path / "temporal.db", free_port(), ui_port,
                       ui_codec_endpoint=codec_url)
    await server.start()
    try:
        client = await Client.connect(server.address, data_converter=data_converter(config))
        handle = await client.start_workflow("CodecProbe", {"marker": marker},
                                             id=f"codec-probe-{uuid.uuid4().hex[:8]}",
                                             task_queue="nobody-polls")
        url = f"{ui}/namespaces/default/workflows/{handle.id}/{handle.result_run_id}/history"
        shot = artifacts() / "codec-ui-signed-in.png"
        before, after, text = await asyncio.to_thread(sign_in_then_look, codec_url, token,
                                                      url, marker, shot)
        print(f"screenshot: {shot}")
        assert not before, "decrypted without signing in"
        assert after, f"signed in, the page never showed the decrypted input: {text[:2000]}"
        await handle.terminate("test over")
    finally:
        await server.stop()
        codec.stop()
