"""StreamEventsListener over a real SSH connection to the fake Gerrit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from lockmaster.config.models import GerritConnection
from lockmaster.model.change import ReviewEvent
from lockmaster.starters.gerrit_listen import StreamEventsListener
from tests.fakes.gerrit import FakeGerrit, gerrit_connection

SHA = "1" * 40


class Collector:
    """The listener's callback: keeps events, can be told to fail on one."""

    def __init__(self) -> None:
        self.events: list[ReviewEvent] = []
        self.fail_on: set[int] = set()
        self._arrived = asyncio.Condition()

    async def __call__(self, event: ReviewEvent) -> None:
        async with self._arrived:
            self.events.append(event)
            self._arrived.notify_all()
        if event.change in self.fail_on:
            raise RuntimeError(f"handler broke on change {event.change}")

    async def wait_for(self, count: int) -> list[ReviewEvent]:
        async with asyncio.timeout(5):
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.events) >= count)
        return self.events


@pytest.fixture
async def fake() -> AsyncIterator[FakeGerrit]:
    async with FakeGerrit() as fake:
        fake.add_change("org/app", "main", 101, commit=SHA)
        fake.add_change("org/app", "main", 102)
        yield fake


async def running(listener: StreamEventsListener) -> asyncio.Task[None]:
    return asyncio.create_task(listener.run())


async def shutdown(listener: StreamEventsListener, task: asyncio.Task[None]) -> None:
    listener.stop()
    async with asyncio.timeout(5):
        await task


async def test_events_arrive_and_survive_reconnect(fake: FakeGerrit, tmp_path: Path) -> None:
    collector = Collector()
    listener = StreamEventsListener(
        "review", gerrit_connection(fake, tmp_path), collector, backoff_initial=0.05
    )
    task = await running(listener)
    try:
        await fake.wait_streams(1)
        await fake.emit(fake.patchset_created_event(101))
        await fake.emit({"type": "reviewer-added", "change": {}})  # ignored type
        await fake.emit(
            fake.comment_added_event(101, "Patch Set 1: Code-Review+2", {"Code-Review": 2})
        )
        events = await collector.wait_for(2)
        assert [(e.type, e.connection, e.change, e.patchset, e.commit) for e in events] == [
            ("patchset-created", "review", 101, 1, SHA),
            ("comment-added", "review", 101, 1, SHA),
        ]
        assert events[1].approvals == {"Code-Review": 2}
        assert listener.connections == 1

        await fake.drop_streams()
        await fake.wait_streams(1)  # the listener came back by itself
        assert listener.connections == 2
        await fake.emit(fake.change_merged_event(102))
        events = await collector.wait_for(3)
        assert (events[2].type, events[2].change) == ("change-merged", 102)
    finally:
        await shutdown(listener, task)
    await fake.wait_streams(0)  # stop() closed the session


async def test_callback_error_and_garbage_are_not_fatal(
    fake: FakeGerrit, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    collector = Collector()
    collector.fail_on = {101}
    listener = StreamEventsListener("review", gerrit_connection(fake, tmp_path), collector)
    task = await running(listener)
    try:
        await fake.wait_streams(1)
        with caplog.at_level(logging.WARNING, logger="lockmaster.starters.gerrit_listen"):
            await fake.emit(fake.patchset_created_event(101))
            for process in list(fake._streams):  # a line that is not JSON
                process.stdout.write("not json\n")
            await fake.emit({"type": "patchset-created", "patchSet": {}})  # no change
            await fake.emit(fake.patchset_created_event(102))
            events = await collector.wait_for(2)
        assert [e.change for e in events] == [101, 102]
        assert listener.connections == 1  # none of that dropped the connection
        assert "handler broke on change 101" in caplog.text
        assert "skipping unreadable event 'not json'" in caplog.text
        assert "patchset-created event: missing or bad" in caplog.text
    finally:
        await shutdown(listener, task)


async def test_wrong_host_key_is_refused(
    fake: FakeGerrit, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = gerrit_connection(fake, tmp_path)
    assert config.ssh is not None
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    config.ssh.known_hosts_file.write_text(f"[{fake.host}]:{fake.ssh_port} {impostor}")
    collector = Collector()
    listener = StreamEventsListener("review", config, collector, backoff_initial=0.05)
    with caplog.at_level(logging.WARNING, logger="lockmaster.starters.gerrit_listen"):
        task = await running(listener)
        try:
            await asyncio.sleep(0.5)  # several attempts at 0.05, 0.1, 0.2 s
            assert listener.connections == 0
            assert fake.stream_count == 0
        finally:
            await shutdown(listener, task)
    failures = [r for r in caplog.records if "stream-events failed" in r.getMessage()]
    assert len(failures) >= 2  # it kept trying, with backoff
    assert "host key" in caplog.text.lower()


async def test_unauthorised_client_key_is_refused(fake: FakeGerrit, tmp_path: Path) -> None:
    config = gerrit_connection(fake, tmp_path)
    assert config.ssh is not None
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(config.ssh.key_file)
    listener = StreamEventsListener("review", config, Collector(), backoff_initial=0.05)
    task = await running(listener)
    try:
        await asyncio.sleep(0.3)
        assert (listener.connections, fake.stream_count) == (0, 0)
    finally:
        await shutdown(listener, task)


class RecordingBackoff(StreamEventsListener):
    """Records each backoff delay instead of sleeping it."""

    delays: list[float]

    async def _backoff(self, delay: float) -> None:
        self.delays.append(delay)
        if len(self.delays) >= 6:
            self.stop()
        await asyncio.sleep(0)


async def test_backoff_grows_and_is_capped(tmp_path: Path) -> None:
    async with FakeGerrit() as fake:
        config = gerrit_connection(fake, tmp_path)
    # Nothing listens any more: every attempt fails at once.
    listener = RecordingBackoff("review", config, Collector(), backoff_initial=1, backoff_max=8)
    listener.delays = []
    async with asyncio.timeout(5):
        await listener.run()  # returns once _backoff has called stop()
    assert listener.delays == [1, 2, 4, 8, 8, 8]
    assert listener.connections == 0


async def test_stop_while_connected_ends_run(fake: FakeGerrit, tmp_path: Path) -> None:
    listener = StreamEventsListener("review", gerrit_connection(fake, tmp_path), Collector())
    task = await running(listener)
    await fake.wait_streams(1)
    assert listener.connected.is_set()
    await shutdown(listener, task)
    assert task.done() and task.exception() is None
    assert not listener.connected.is_set()
    await fake.wait_streams(0)


def test_ssh_section_is_required(tmp_path: Path) -> None:
    config = GerritConnection(
        driver="gerrit", url="https://review.example.org", user="lm", password_file=tmp_path / "p"
    )
    with pytest.raises(ValueError, match="no `ssh` section"):
        StreamEventsListener("review", config, Collector())
