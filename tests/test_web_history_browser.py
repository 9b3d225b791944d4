"""The log viewer and the build history pages in a real headless browser (Debian's chromium and
chromium-driver, through selenium): a range anchor is highlighted, clicking and shift-clicking
line numbers makes links, a running log's new lines appear without a reload with their
severity, the builds table is drawn from the API and its filter form narrows it; the browser
logs no errors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from lockmaster.web.app import build_app
from lockmaster.web.context import WebContext
from tests.ports import free_port
from tests.test_web_browser import CHROMEDRIVER, CHROMIUM, browser, wait_for
from tests.web_history import build, config, open_db

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                       reason="needs Debian's chromium and chromium-driver (scripts/setup --test)"),
]

LOG = "42/1042/1/check/unit/0000000/job-output.txt"
STAMP = "2026-12-07 10:00:00.000001 | "


def browse(base: str, log_file: Path) -> dict[str, Any]:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser()
    seen: dict[str, Any] = {}
    try:
        driver.get(f"{base}/logs/{LOG}#L2-L3")
        wait_for(lambda: driver.find_elements(By.ID, "L3"), "the log's lines")
        seen["highlighted"] = driver.execute_script(
            "return [...document.querySelectorAll('.line.hl')].map((l) => l.id);")
        seen["classes"] = driver.execute_script(
            "return ['L1','L2','L3'].map((id) => document.getElementById(id).className);")
        driver.execute_script("window.__notReloaded = true;")
        with log_file.open("a") as out:  # the job writes on
            out.write(f"{STAMP}WARNING: late\n{STAMP}more\n{STAMP}ERROR: boom\n")
        wait_for(lambda: driver.find_elements(By.ID, "L6"), "the tailed lines", timeout=30)
        seen["tailed"] = driver.execute_script(
            "return ['L4','L5','L6'].map((id) => [document.getElementById(id).className,"
            " document.getElementById(id).querySelector('.t').textContent]);")
        seen["not_reloaded"] = driver.execute_script("return window.__notReloaded === true;")
        driver.find_element(By.CSS_SELECTOR, "#L1 a.ln").click()
        seen["clicked"] = driver.execute_script("return location.hash;")
        target = driver.find_element(By.CSS_SELECTOR, "#L4 a.ln")
        ActionChains(driver).key_down(Keys.SHIFT).click(target).key_up(Keys.SHIFT).perform()
        seen["range"] = driver.execute_script("return location.hash;")
        seen["range_highlighted"] = driver.execute_script(
            "return [...document.querySelectorAll('.line.hl')].map((l) => l.id);")

        driver.get(f"{base}/builds")
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#history tbody tr td a"),
                 "the builds table")
        seen["all_rows"] = len(driver.find_elements(By.CSS_SELECTOR, "#history tbody tr"))
        field = driver.find_element(By.CSS_SELECTOR, "#filters input[name=job]")
        field.send_keys("lint")
        driver.find_element(By.CSS_SELECTOR, "#filters button").click()
        wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")) == 1,
                 "the filtered table")
        seen["filtered_url"] = driver.current_url
        seen["filtered_job"] = driver.find_element(
            By.CSS_SELECTOR, "#history tbody tr td:nth-child(2)").text
        seen["errors"] = [entry for entry in driver.get_log("browser")
                          if entry["level"] == "SEVERE"]
    finally:
        driver.quit()
    return seen


async def test_log_viewer_and_builds_page_in_a_browser(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / LOG
    log_file.parent.mkdir(parents=True)
    log_file.write_text(f"{STAMP}start\n{STAMP}DEBUG detail\n{STAMP}ERROR: first\n")
    db = open_db(tmp_path)
    now = time.time()
    db.record_builds([build("a" * 32, "unit", "SUCCESS", now - 60, number=1),
                      build("b" * 32, "lint", "FAILURE", now - 30, number=2),
                      build("c" * 32, "unit", "FAILURE", now - 10, number=3)])
    app = build_app(WebContext(config=config(tmp_path), state_dir=tmp_path, client=None,
                               results=db))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        seen = await asyncio.to_thread(browse, f"http://127.0.0.1:{port}", log_file)
    finally:
        await runner.cleanup()
        db.close()
    assert seen["highlighted"] == ["L2", "L3"]
    assert seen["classes"] == ["line", "line debug hl", "line error hl"]
    assert seen["tailed"] == [["line warning", f"{STAMP}WARNING: late"],
                              ["line", f"{STAMP}more"],
                              ["line error", f"{STAMP}ERROR: boom"]]
    assert seen["not_reloaded"] is True
    assert seen["clicked"] == "#L1"
    assert seen["range"] == "#L1-L4"
    assert seen["range_highlighted"] == ["L1", "L2", "L3", "L4"]
    assert seen["all_rows"] == 3
    assert "job=lint" in seen["filtered_url"] and seen["filtered_job"] == "lint"
    assert seen["errors"] == []
