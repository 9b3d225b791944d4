"""The status page in a real headless browser (Debian's chromium and chromium-driver, driven by
selenium) while a gate runs on the dev server: items appear and progress updates without a
reload, a change's deep link highlights it, the browser logs no errors. Screenshots are saved
under tests/artifacts/web/ (or $LOCKMASTER_TEST_ARTIFACTS/web/); the path is printed."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from temporalio.client import Client

from lockmaster.web.app import build_app
from lockmaster.web.context import WebContext
from tests.deployment import deployment, unique_project
from tests.ports import free_port
from tests.test_gate_workflow import approve, gate_config, settle

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                       reason="needs Debian's chromium and chromium-driver (scripts/setup --test)"),
]


def artifacts() -> Path:
    root = Path(os.environ.get("LOCKMASTER_TEST_ARTIFACTS")
                or Path(__file__).parent / "artifacts")
    path = root / "web"
    path.mkdir(parents=True, exist_ok=True)
    return path


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1600"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def browse(base: str, numbers: list[int], approve_all: Callable[[], None],
           shots: Path) -> dict[str, Any]:
    """Everything the browser does (blocking: run in a thread while the gate runs)."""
    from selenium.webdriver.common.by import By

    driver = browser()
    seen: dict[str, Any] = {}
    try:
        driver.get(base + "/")
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "section.pipeline"),
                 "the pipelines")
        driver.execute_script("window.__notReloaded = true;")
        approve_all()

        # The page re-renders every 2 s: read it in one script, never through elements kept
        # across a render (they go stale).
        def numbers_of(selector: str) -> list[int]:
            return driver.execute_script(
                "return [...document.querySelectorAll(arguments[0])]"
                ".map((c) => Number(c.dataset.number));", selector)

        def cards() -> list[int]:
            return numbers_of("section.item")

        # The items appear without a reload, in order.
        wait_for(lambda: len(cards()) >= len(numbers), "every item")
        seen["order"] = cards()
        seen["why"] = wait_for(lambda: driver.execute_script(
            "return [...document.querySelectorAll('section.item p.why')]"
            ".map((p) => [Number(p.closest('section').dataset.number), p.textContent])"
            ".filter(([, text]) => text.includes('outside the window'));"),
            "the reason the third item waits")
        driver.save_screenshot(str(shots / "status-items.png"))

        # A running job's elapsed time moves on between polls, still without a reload.
        def running_times() -> list[str]:
            return driver.execute_script(
                "return [...document.querySelectorAll('tr.job')]"
                ".filter((r) => r.querySelector('td.state').textContent.startsWith('running'))"
                ".map((r) => r.querySelector('td.times').textContent)"
                ".filter((t) => t.includes('elapsed'));")

        first = wait_for(running_times, "a running job with its elapsed time")
        seen["first_times"] = first
        history: list[Any] = []

        def moved_on() -> list[str] | None:
            times = running_times()
            history.append((time.strftime("%H:%M:%S"), driver.execute_script(
                "return document.getElementById('updated').textContent;"), times))
            return times if times and times != first else None

        try:
            seen["later_times"] = wait_for(moved_on, "the elapsed time to move on")
        except AssertionError as exc:
            changes = [h for i, h in enumerate(history) if i == 0 or h[1:] != history[i - 1][1:]]
            raise AssertionError(f"{exc}: first {first}, then {changes}") from exc
        seen["bars"] = len(driver.find_elements(By.CSS_SELECTOR, "div.bar[role=progressbar]"))
        seen["not_reloaded"] = driver.execute_script("return window.__notReloaded === true;")
        driver.save_screenshot(str(shots / "status-progress.png"))

        # The deep link of the second change: filtered to it, highlighted, on first load.
        target = numbers[1]
        driver.get(f"{base}/change/{target}")
        seen["deep_highlighted"] = wait_for(lambda: numbers_of("section.item.highlight"),
                                            "the highlighted change")
        seen["deep_all"] = cards()
        seen["deep_filter"] = driver.find_element(By.ID, "filter-change").get_attribute("value")
        driver.save_screenshot(str(shots / "change-deep-link.png"))

        # The #change-N anchor on the unfiltered page highlights it too.
        driver.get(f"{base}/#change-{numbers[2]}")
        seen["anchor_highlighted"] = wait_for(lambda: numbers_of("section.item.highlight"),
                                              "the anchored change")
        seen["anchor_all"] = len(cards())

        # The filter box filters without a reload.
        driver.execute_script("window.__notReloaded = true;")
        box = driver.find_element(By.ID, "filter-change")
        box.clear()
        box.send_keys(str(numbers[0]))
        driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
        wait_for(lambda: cards() == [numbers[0]], "the filtered list")
        seen["filter_not_reloaded"] = driver.execute_script(
            "return window.__notReloaded === true;")
        driver.get(base + "/nodes")
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "section.pool"), "the pools")
        driver.save_screenshot(str(shots / "nodes.png"))
        for path, says in (("/tes", "No TE hosts are configured."),
                           ("/publications", "Nothing has been published yet.")):
            driver.get(base + path)
            wait_for(lambda says=says: says in driver.execute_script(
                "return document.querySelector('main').innerText;"), path)
        seen["log"] = driver.get_log("browser")
    except AssertionError as exc:  # what the page showed, for whoever reads the failure
        driver.save_screenshot(str(shots / "failure.png"))
        shown = driver.execute_script("return document.querySelector('main').innerText;")
        raise AssertionError(f"{exc}; the page showed:\n{shown[:3000]}\n"
                             f"browser log: {driver.get_log('browser')}") from exc
    finally:
        driver.quit()
    return seen


async def test_status_page_in_a_browser_while_a_gate_runs(client: Client, tmp_path: Path) -> None:
    name = unique_project()
    # A window of 2: the third change waits outside it, and the page says so.
    config = gate_config(tmp_path, [name], "sleep 8", window=2, **{"window-floor": 1})
    shots = artifacts()
    port = free_port()
    ctx = WebContext(config=config, state_dir=config.state_path, client=client, results=None)
    runner = web.AppRunner(build_app(ctx))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    loop = asyncio.get_running_loop()
    try:
        async with deployment(client, config) as dep:
            dep.store.create_project(name, {"README": "x\n"})
            changes = [dep.store.upload(name, files={f: f + "\n"}, subject=f)
                       for f in ("a", "b", "c")]
            numbers = [c.number for c in changes]

            def approve_all() -> None:  # from the browser's thread, on the test's loop
                for number in numbers:
                    asyncio.run_coroutine_threadsafe(approve(dep, number), loop).result(30)

            seen = await asyncio.to_thread(browse, f"http://127.0.0.1:{port}", numbers,
                                           approve_all, shots)
            await settle(dep, f"gate/{name}")
    finally:
        await runner.cleanup()
    print(f"\nscreenshots: {shots}")
    assert seen["order"][:3] == numbers
    assert seen["why"][0][0] == numbers[2]
    assert "outside the window: position 3, window 2" in seen["why"][0][1]
    assert seen["not_reloaded"] and seen["filter_not_reloaded"]
    assert seen["later_times"] != seen["first_times"]
    assert seen["bars"] >= 3
    assert seen["deep_highlighted"] == [numbers[1]] and seen["deep_all"] == [numbers[1]]
    assert seen["deep_filter"] == str(numbers[1])
    assert seen["anchor_highlighted"] == [numbers[2]] and seen["anchor_all"] >= 2
    errors = [entry for entry in seen["log"] if entry["level"] == "SEVERE"]
    assert errors == [], errors
    for shot in ("status-items.png", "status-progress.png", "change-deep-link.png", "nodes.png"):
        assert (shots / shot).stat().st_size > 1000, shot
