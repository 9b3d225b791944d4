"""No event lost: the stream-events listener with its journal, over real SSH and HTTP to the
fake Gerrit. Events Gerrit sent while the stream was down (a drop, a listener restart) are
replayed from the REST API after the reconnect, each handed over once; a hand-off that fails is
kept on disk and retried in order, across a restart too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lockmaster.config.models import GerritConnection
from lockmaster.model.change import ReviewEvent
from lockmaster.review.gerrit import GerritDriver
from lockmaster.review.gerrit_catchup import events_since
from lockmaster.starters.event_journal import EventJournal
from lockmaster.starters.gerrit_listen import StreamEventsListener
from tests.fakes.gerrit import FakeGerrit, gerrit_connection


class Handler:
    """The listener's callback: records what it was handed; `failing` makes hand-offs raise
    (Temporal unreachable)."""

    def __init__(self) -> None:
        self.events: list[ReviewEvent] = []
        self.failing = False
        self.refused = 0
        self._changed = asyncio.Condition()

    async def __call__(self, event: ReviewEvent) -> None:
        if self.failing:
            async with self._changed:
                self.refused += 1
                self._changed.notify_all()
            raise ConnectionError("Temporal is unreachable")
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    async def wait_for(self, count: int) -> list[tuple[str, int | None]]:
        async with asyncio.timeout(10):
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.events) >= count)
        return self.seen()

    async def wait_refused(self, count: int) -> None:
        async with asyncio.timeout(10):
            async with self._changed:
                await self._changed.wait_for(lambda: self.refused >= count)

    def seen(self) -> list[tuple[str, int | None]]:
        return [(e.type, e.change) for e in self.events]


@pytest.fixture
async def fake() -> AsyncIterator[FakeGerrit]:
    async with FakeGerrit() as fake:
        for number in (101, 102, 103):
            fake.add_change("org/app", "main", number)
        yield fake


class Listening:
    """A listener with a journal in `directory`, asking the fake's REST API to catch up."""

    def __init__(self, fake: FakeGerrit, config: GerritConnection, directory: Path,
                 handler: Handler) -> None:
        self.driver = GerritDriver("review", config)
        journal = EventJournal(directory / "events" / "review.json")

        async def catch_up(since: float) -> list[ReviewEvent]:
            return events_since(await self.driver.changes_since(since), "review", since,
                                fake.url)

        self.listener = StreamEventsListener("review", config, handler, backoff_initial=0.05,
                                             journal=journal, catch_up=catch_up,
                                             retry_initial=0.05)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StreamEventsListener:
        self.task = asyncio.create_task(self.listener.run())
        async with asyncio.timeout(10):
            await self.listener.connected.wait()
        return self.listener

    async def __aexit__(self, *exc: object) -> None:
        self.listener.stop()
        assert self.task is not None
        async with asyncio.timeout(5):
            await self.task
        await self.driver.aclose()


async def test_events_sent_while_the_listener_was_down_are_replayed_once(
        fake: FakeGerrit, tmp_path: Path) -> None:
    config = gerrit_connection(fake, tmp_path / "conn")
    handler = Handler()
    async with Listening(fake, config, tmp_path, handler) as listener:
        await fake.emit(fake.record(fake.comment_added_event(101, "recheck")))
        assert await handler.wait_for(1) == [("comment-added", 101)]
        assert listener.caught_up == 0  # the first run ever: nothing before it to catch up
    # Down (a restart, an outage): Gerrit goes on, and nothing reaches the stream.
    fake.record(fake.comment_added_event(102, "Patch Set 1: Code-Review+2",
                                         {"Code-Review": 2}))
    fake.record(fake.change_abandoned_event(103, "obsolete"))
    fake.record(fake.patchset_created_event(101))
    async with Listening(fake, config, tmp_path, handler) as listener:
        assert await handler.wait_for(4) == [
            ("comment-added", 101), ("comment-added", 102), ("change-abandoned", 103),
            ("patchset-created", 101)]
        assert listener.caught_up == 3
        assert handler.events[1].approvals == {"Code-Review": 2}
        assert handler.events[2].comment == "obsolete"
        # Later events come by the stream again; one sent both ways is handed over once.
        both = fake.record(fake.comment_added_event(103, "both ways"))
        await fake.emit(both)
        await fake.emit(fake.record(fake.comment_added_event(102, "after")))
        assert (await handler.wait_for(6))[4:] == [("comment-added", 103),
                                                   ("comment-added", 102)]
        await fake.emit(both)  # Gerrit (or a proxy) delivering it again
        await fake.emit(fake.record(fake.comment_added_event(101, "last")))
        assert (await handler.wait_for(7))[6:] == [("comment-added", 101)]
        assert listener.duplicates >= 1
    assert len(handler.events) == 7


async def test_a_dropped_stream_is_caught_up_after_the_reconnect(
        fake: FakeGerrit, tmp_path: Path) -> None:
    config = gerrit_connection(fake, tmp_path / "conn")
    handler = Handler()
    async with Listening(fake, config, tmp_path, handler) as listener:
        await fake.emit(fake.record(fake.comment_added_event(101, "first")))
        await handler.wait_for(1)
        # Gerrit drops the stream, and an approval lands before the listener is back: hold
        # the reconnect until it has happened.
        gate = asyncio.Event()
        original = listener._backoff

        async def held(delay: float) -> None:
            await gate.wait()
            await original(delay)

        listener._backoff = held  # type: ignore[method-assign]
        await fake.drop_streams()
        fake.record(fake.comment_added_event(102, "Patch Set 1: Workflow+1", {"Workflow": 1}))
        gate.set()
        assert await handler.wait_for(2) == [("comment-added", 101), ("comment-added", 102)]
        assert handler.events[1].approvals == {"Workflow": 1}
        assert listener.connections == 2 and listener.caught_up == 1


async def test_a_failed_hand_off_is_kept_and_retried_in_order_across_a_restart(
        fake: FakeGerrit, tmp_path: Path) -> None:
    config = gerrit_connection(fake, tmp_path / "conn")
    handler = Handler()
    async with Listening(fake, config, tmp_path, handler) as listener:
        handler.failing = True
        await fake.emit(fake.record(fake.comment_added_event(101, "one")))
        await fake.emit(fake.record(fake.comment_added_event(102, "two")))
        await handler.wait_refused(2)
        assert listener.kept == 2 and handler.events == []
    # The listener stops with both still waiting: they are on disk.
    assert [e.change for e in EventJournal(tmp_path / "events" / "review.json").spooled] \
        == [101, 102]
    async with Listening(fake, config, tmp_path, handler) as listener:
        await fake.emit(fake.record(fake.comment_added_event(103, "three")))
        await asyncio.sleep(0.3)
        assert handler.events == []  # still failing: nothing handed over, nothing dropped
        handler.failing = False
        assert await handler.wait_for(3) == [("comment-added", 101), ("comment-added", 102),
                                             ("comment-added", 103)]
        assert listener.journal is not None and listener.journal.spooled == []
        await asyncio.sleep(0.2)
    assert len(handler.events) == 3  # the catch-up of the restart did not repeat them


def test_an_unreadable_journal_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "review.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="move it aside"):
        EventJournal(path)
