"""Listen to `gerrit stream-events` over SSH and hand each event to a callback, forever.

With a journal (starters/event_journal.py) nothing is lost: after every (re)connect the listener
first asks Gerrit's REST API what happened since the last event it handed over (`catch_up`) and
replays it; an event handed over already is not handed over again; an event whose hand-off
fails is kept on disk and retried, in order, until it goes through.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

import asyncssh

from lockmaster.config.models import GerritConnection, GerritSSH
from lockmaster.model.change import ReviewEvent
from lockmaster.review.base import ReviewError
from lockmaster.review.gerrit_events import GerritEventError, parse_event
from lockmaster.starters.event_journal import EventJournal

log = logging.getLogger(__name__)

STREAM_COMMAND = "gerrit stream-events"

OnEvent = Callable[[ReviewEvent], Awaitable[object]]
# What happened since a time (oldest first): Gerrit's REST API asked (review/gerrit_catchup.py).
CatchUp = Callable[[float], Awaitable[list[ReviewEvent]]]

RETRY_INITIAL = 1.0
RETRY_MAX = 60.0


class StreamEventsListener:
    """One SSH stream-events session at a time; reconnects with exponential backoff until stop()."""

    def __init__(
        self,
        name: str,
        config: GerritConnection,
        on_event: OnEvent,
        *,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        keepalive_interval: float = 30.0,
        connect_timeout: float = 30.0,
        journal: EventJournal | None = None,
        catch_up: CatchUp | None = None,
        retry_initial: float = RETRY_INITIAL,
    ) -> None:
        if config.ssh is None:
            raise ValueError(f"connection {name!r} has no `ssh` section: stream-events needs one")
        self.connection = name
        self.ssh: GerritSSH = config.ssh
        self.on_event = on_event
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.keepalive_interval = keepalive_interval
        self.connect_timeout = connect_timeout
        # Set while a stream is open; `connections` counts successful connects (tests wait on it).
        self.connected = asyncio.Event()
        self.connections = 0
        self.events_received = 0
        self.journal = journal
        self.catch_up = catch_up
        self.retry_initial = retry_initial
        # Counted for operators and tests: replayed by a catch-up, recognised as already handed
        # over, kept after a failed hand-off.
        self.caught_up = 0
        self.duplicates = 0
        self.kept = 0
        self._handing = asyncio.Lock()
        self._spool_wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._session: asyncio.Task[None] | None = None

    async def run(self) -> None:
        retrier = asyncio.create_task(self._retry_spool()) if self.journal else None
        try:
            await self._run()
        finally:
            if retrier is not None:
                retrier.cancel()

    async def _run(self) -> None:
        delay = self.backoff_initial
        while not self._stopping.is_set():
            before = self.connections
            self._session = asyncio.create_task(self._stream_once())
            try:
                await self._session
            except asyncio.CancelledError:
                if self._stopping.is_set():
                    break
                raise
            except (OSError, asyncssh.Error, TimeoutError, ReviewError) as exc:
                log.warning("gerrit %s: stream-events failed: %s", self.connection, exc)
            except Exception:
                # Anything else is a bug, but the listener must outlive it.
                log.exception("gerrit %s: stream-events failed unexpectedly", self.connection)
            finally:
                self.connected.clear()
                self._session = None
            if self.connections > before:
                delay = self.backoff_initial  # it worked for a while: start the backoff afresh
            if self._stopping.is_set():
                break
            log.info("gerrit %s: reconnecting in %.1f s", self.connection, delay)
            await self._backoff(delay)
            delay = min(delay * 2, self.backoff_max)
        log.info("gerrit %s: stream-events listener stopped", self.connection)

    async def _backoff(self, delay: float) -> None:
        """Sleep `delay` seconds, or less when stop() is called meanwhile."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            pass

    def stop(self) -> None:
        self._stopping.set()
        if self._session is not None:
            self._session.cancel()

    async def _stream_once(self) -> None:
        ssh = self.ssh
        target = f"{ssh.user}@{ssh.host}:{ssh.port}"
        log.info("gerrit %s: connecting to %s", self.connection, target)
        async with asyncssh.connect(
            ssh.host,
            ssh.port,
            username=ssh.user,
            client_keys=[str(ssh.key_file)],
            # The host key must be in this file; verification is never turned off.
            known_hosts=str(ssh.known_hosts_file),
            # Only what the config says: no ~/.ssh/config, no agent, no password prompts.
            config=None,
            agent_path=None,
            preferred_auth="publickey",
            connect_timeout=self.connect_timeout,
            keepalive_interval=self.keepalive_interval,
            keepalive_count_max=3,
        ) as conn:
            async with conn.create_process(STREAM_COMMAND) as process:
                self.connections += 1
                log.info("gerrit %s: connected to %s, streaming events", self.connection, target)
                # Events Gerrit sends meanwhile wait in the channel: the catch-up goes first.
                await self._catch_up()
                self.connected.set()
                async for line in process.stdout:
                    await self._handle_line(line)
                status = process.exit_status
        log.warning(
            "gerrit %s: disconnected from %s (stream ended, exit status %s)",
            self.connection,
            target,
            status,
        )

    async def _handle_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            data = json.loads(line)
            event = parse_event(data, self.connection) if isinstance(data, dict) else None
        except (ValueError, GerritEventError) as exc:
            log.warning(
                "gerrit %s: skipping unreadable event %.200r: %s", self.connection, line, exc
            )
            return
        if event is None:
            return
        self.events_received += 1
        await self.deliver(event)

    async def deliver(self, event: ReviewEvent) -> None:
        """Hand the event over once: not again if it was already, kept on disk if it fails."""
        journal = self.journal
        if journal is None:
            try:
                await self.on_event(event)
            except Exception:
                log.exception("gerrit %s: handling %s event failed", self.connection,
                              event.type)
            return
        async with self._handing:
            if journal.seen(event):
                self.duplicates += 1
                return
            if journal.spooled:  # behind the ones still waiting, in order
                self._keep(event)
                return
            try:
                await self.on_event(event)
            except Exception as exc:
                log.warning("gerrit %s: handing over %s of change %s failed (%s): kept in %s, "
                            "retried until it goes through", self.connection, event.type,
                            event.change, _why(exc), journal.path)
                self._keep(event)
                return
            journal.handed_over(event)

    def _keep(self, event: ReviewEvent) -> None:
        assert self.journal is not None
        self.journal.keep(event)
        self.kept += 1
        self._spool_wake.set()

    async def _catch_up(self) -> None:
        """Replay what Gerrit says happened since the last event handed over. A failure ends
        the session (the reconnect asks again): the stream must not run past a gap."""
        journal = self.journal
        if journal is None:
            return
        since = journal.catch_up_from()
        if since is None or self.catch_up is None:
            journal.start()
            return
        events = await self.catch_up(since)
        replayed = 0
        for event in events:
            before = self.duplicates
            await self.deliver(event)
            replayed += self.duplicates == before
        self.caught_up += replayed
        if replayed:
            log.info("gerrit %s: caught up %d event(s) missed since %s", self.connection,
                     replayed, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(since)))

    async def _retry_spool(self) -> None:
        """Hand the kept events over, oldest first, with a growing pause while it fails."""
        assert self.journal is not None
        delay = self.retry_initial
        while True:
            if not self.journal.spooled:
                self._spool_wake.clear()
                await self._spool_wake.wait()
                delay = self.retry_initial
            await asyncio.sleep(delay)
            async with self._handing:
                while self.journal.spooled:
                    event = self.journal.spooled[0]
                    try:
                        await self.on_event(event)
                    except Exception as exc:
                        log.warning("gerrit %s: %d event(s) still waiting to be handed over "
                                    "(%s); next try in %.0f s", self.connection,
                                    len(self.journal.spooled), _why(exc),
                                    min(delay * 2, RETRY_MAX))
                        delay = min(delay * 2, RETRY_MAX)
                        break
                    self.journal.unspool(event)
                    delay = self.retry_initial


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
