"""A Gerrit hook whose event cannot be handed over (Temporal down) keeps it on disk; it is
delivered before the next hook's event, or by `lockmaster events flush`, in order, once.
Gerrit runs each hook once: without this the event is lost (issue 15)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from temporalio.client import Client
from typer.testing import CliRunner, Result

from lockmaster.cli.main import app
from lockmaster.config.models import LockmasterConfig
from lockmaster.model.change import ReviewEvent
from lockmaster.starters.kept_events import KeptEvents, kept_events
from tests.deployment import unique_project
from tests.fakes.gerrit import FakeGerrit
from tests.gitrepos import ReviewSite
from tests.ports import free_port
from tests.test_check_gerrit import add_change, gerrit_config


def write(config: LockmasterConfig, address: str, path: Path) -> Path:
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["temporal"]["address"] = address
    path.write_text(yaml.safe_dump(data))
    return path


def hook_args(project: str, number: int, commit: str, url: str) -> list[str]:
    return ["--change", f"{project.replace('/', '%2F')}~master~I{number:040d}",
            "--change-url", f"{url}/c/{project}/+/{number}", "--project", project,
            "--branch", "master", "--kind", "REWORK", "--uploader", "Jane (jane@example.org)",
            "--uploader-username", "jane", "--commit", commit, "--patchset", "1"]


async def lockmaster(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def test_a_hook_event_temporal_could_not_take_is_kept_and_delivered_later(
        client: Client, tmp_path: Path) -> None:
    project = unique_project()
    site = ReviewSite(tmp_path / "git")
    site.create_project(project)
    async with FakeGerrit() as fake:
        config = gerrit_config(tmp_path, fake, site, project, "true")
        commits = {n: add_change(fake, site, project, n) for n in (1, 2, 3)}
        down = write(config, f"127.0.0.1:{free_port()}", tmp_path / "down.yaml")
        up = write(config, client.service_client.config.target_host, tmp_path / "up.yaml")

        for number in (1, 2):  # Temporal is down: both kept, in order, exit 1
            result = await lockmaster("hook", "patchset-created", "--lockmaster-config",
                                      str(down), *hook_args(project, number, commits[number],
                                                            fake.url))
            assert result.exit_code == 1, result.output
            assert "could not deliver the patchset-created event" in result.output
            assert "lockmaster events flush --connection gerrit" in result.output
        spool = kept_events(config.state_path, "gerrit")
        kept = [ReviewEvent.model_validate_json(p.read_text()).change for p in spool.pending()]
        assert kept == [1, 2]

        # Temporal is back: the next hook hands over the kept ones first, then its own.
        result = await lockmaster("hook", "patchset-created", "--lockmaster-config", str(up),
                                  *hook_args(project, 3, commits[3], fake.url))
        assert result.exit_code == 0, result.output
        assert "handed over 2 event(s) kept by earlier hooks" in result.output
        assert spool.pending() == []
        prefix = config.temporal.workflow_id_prefix
        for number in (1, 2, 3):
            handle = client.get_workflow_handle(f"{prefix}check/{project}/{number}/1")
            await handle.describe()  # started (no worker runs it here: started is enough)
            await handle.terminate("test over")

        # `gerrit flush` with nothing kept says so and does not claim success.
        result = await lockmaster("events", "flush", "--connection", "gerrit", "--config",
                                  str(up))
        assert result.exit_code == 1 and "nothing to hand over" in result.output


async def test_flush_stops_at_the_first_failure_and_keeps_the_rest(tmp_path: Path) -> None:
    spool = KeptEvents(tmp_path / "spool")
    for number in (1, 2, 3):
        spool.keep(ReviewEvent(type="patchset-created", connection="gerrit", project="p",
                               change=number, patchset=1))
    delivered: list[int | None] = []

    async def deliver(event: ReviewEvent) -> None:
        if event.change == 2:
            raise ConnectionError("Temporal is unreachable")
        delivered.append(event.change)

    try:
        await spool.flush(deliver)
    except ConnectionError:
        pass
    else:
        raise AssertionError("the failure was swallowed")
    assert delivered == [1]
    assert [ReviewEvent.model_validate_json(p.read_text()).change
            for p in spool.pending()] == [2, 3]
