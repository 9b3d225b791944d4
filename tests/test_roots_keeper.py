"""The executor keeps the distribution's roots prepared for its local nodes
(lockmaster/packaging/roots_keeper.py), and a mirror that is down does not stop it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest
import yaml

from lockmaster.packaging import roots_keeper
from tests import distribution
from tests.deployment import make_config


def config_with(tmp_path: Path, packaging: dict) -> object:
    return make_config(tmp_path, projects=[], jobs=[{"name": "x", "run": "true"}],
                       packaging=packaging)


def test_only_local_nodes_with_a_distribution_get_roots_kept(tmp_path: Path) -> None:
    without = config_with(tmp_path, {"distribution": None, "cache": {"enabled": False}})
    assert not roots_keeper.wanted(without)  # type: ignore[arg-type]
    with_dist = config_with(tmp_path, {
        "distribution": {"mirror": "http://127.0.0.1:9/debian", "keyring": None},
        "cache": {"enabled": False}, "roots": {"dir": str(tmp_path / "roots")}})
    assert roots_keeper.wanted(with_dist) is (os.geteuid() == 0)  # type: ignore[arg-type]
    command = roots_keeper.prepare_command(with_dist)  # type: ignore[arg-type]
    assert command[2:] == ["prepare-root", "--distribution", "http://127.0.0.1:9/debian",
                           "--codename", "bookworm", "--dist-component", "main", "--roots",
                           str(tmp_path / "roots"), "--max-age", "86400",
                           "--build-include", "debhelper"]


@pytest.mark.skipif(os.geteuid() != 0, reason="clean roots need root")
@pytest.mark.skipif(not distribution.available(), reason=distribution.missing_reason())
def test_roots_are_prepared_ahead_and_a_dead_mirror_is_only_reported(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    good = config_with(tmp_path, distribution.packaging_config())
    dead = config_with(tmp_path, {
        "distribution": {"mirror": "http://127.0.0.1:9/debian", "keyring": None},
        "cache": {"enabled": False}, "roots": {"dir": str(tmp_path / "roots")}})

    original = roots_keeper.prepare_once
    stop = asyncio.Event()

    async def once_then_stop(config: object) -> tuple[bool, str]:
        result = await original(config)  # type: ignore[arg-type]
        stop.set()  # one round: the keeper logs it, then sees stop and returns
        return result

    monkeypatch.setattr(roots_keeper, "prepare_once", once_then_stop)

    def one_round(config: object) -> None:
        stop.clear()
        asyncio.run(asyncio.wait_for(roots_keeper.keep_roots_ready(config, stop), 300))  # type: ignore[arg-type]

    caplog.set_level(logging.INFO, logger=roots_keeper.__name__)
    one_round(good)
    ready = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("package roots ready: buildd:") for m in ready), ready
    assert list(distribution.ROOTS.glob("bookworm-*-buildd-*/packages.lock"))
    caplog.clear()
    one_round(dead)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "could not be prepared" in warning.getMessage()
    assert "127.0.0.1:9" in warning.getMessage()
    assert not (tmp_path / "roots").exists() or not list((tmp_path / "roots").glob("*/root"))


@pytest.mark.skipif(os.geteuid() != 0, reason="clean roots need root")
@pytest.mark.skipif(not distribution.available(), reason=distribution.missing_reason())
def test_the_roots_command_lists_and_prepares_them(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lockmaster.cli.packaging_cmd import app

    packaging = distribution.packaging_config()  # the tests' shared roots
    nothing = tmp_path / "nothing.yaml"
    nothing.write_text(yaml.safe_dump({"packaging": {
        **packaging, "roots": {"dir": str(tmp_path / "roots")}}}))
    runner = CliRunner()
    empty = runner.invoke(app, ["roots", "--config", str(nothing)])
    assert empty.exit_code == 1 and "no prepared roots" in empty.output
    file = tmp_path / "lockmaster.yaml"
    file.write_text(yaml.safe_dump({"packaging": packaging}))
    made = runner.invoke(app, ["roots", "--prepare", "--config", str(file)])
    assert made.exit_code == 0, made.output
    assert "buildd + debhelper" in made.output and "minbase," in made.output
    listed = runner.invoke(app, ["roots", "--json", "--config", str(file)])
    variants = {(r["variant"], tuple(r["include"])) for r in json.loads(listed.output)["roots"]}
    assert {("buildd", ("debhelper",)), ("minbase", ())} <= variants
    off = tmp_path / "off.yaml"
    off.write_text(yaml.safe_dump({"packaging": {"clean-roots": False}}))
    refused = runner.invoke(app, ["roots", "--config", str(off)])
    assert refused.exit_code == 2 and "no clean roots" in refused.output
