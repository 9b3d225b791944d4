"""Worker roles open only the secrets they use: a deployment gives the Gerrit password to the
orchestrator alone (docker-compose.yml, docs/deployment.md), and the executor and publisher,
which only fetch changes, start without it."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import Client

from lockmaster.config.loader import parse_config
from lockmaster.config.models import LockmasterConfig
from lockmaster.review.base import ReviewError
from lockmaster.review.registry import review_drivers
from lockmaster.workers.run import fetch_drivers, make_workers


def gerrit_config(tmp_path: Path) -> LockmasterConfig:
    text = f"""
state-dir: {tmp_path / "state"}
connections:
  gerrit:
    driver: gerrit
    url: https://review.example.org
    user: lockmaster
    password-file: {tmp_path / "not-on-this-host"}
    git-url: https://git.example.org
"""
    return parse_config(text, tmp_path / "lockmaster.yaml")


def test_fetching_roles_need_no_gerrit_password(tmp_path: Path) -> None:
    config = gerrit_config(tmp_path)
    with pytest.raises(ReviewError, match="cannot read Gerrit password file"):
        review_drivers(config)  # what reports and submits need
    drivers = fetch_drivers(config)
    assert drivers["gerrit"].git_url("openstack/nova") == "https://git.example.org/openstack/nova"


@pytest.mark.parametrize("role", ["executor", "publisher", "launcher"])
async def test_roles_without_gerrit_secrets_start(
        tmp_path: Path, client: Client, role: str) -> None:
    assert make_workers(client, gerrit_config(tmp_path), role)


async def test_the_orchestrator_still_reads_the_gerrit_password(
        tmp_path: Path, client: Client) -> None:
    with pytest.raises(ReviewError, match="not-on-this-host"):
        make_workers(client, gerrit_config(tmp_path), "orchestrator")
