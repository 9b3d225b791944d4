"""Listen to `gerrit stream-events` over SSH and hand each event to a callback, forever."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

import asyncssh

from lockmaster.config.models import GerritConnection, GerritSSH
from lockmaster.model.change import ReviewEvent
from lockmaster.review.gerrit_events import GerritEventError, parse_event

log = logging.getLogger(__name__)

STREAM_COMMAND = "gerrit stream-events"

OnEvent = Callable[[ReviewEvent], Awaitable[None]]


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
        self._stopping = asyncio.Event()
        self._session: asyncio.Task[None] | None = None

    async def run(self) -> None:
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
            except (OSError, asyncssh.Error, TimeoutError) as exc:
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
                self.connected.set()
                log.info("gerrit %s: connected to %s, streaming events", self.connection, target)
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
        try:
            await self.on_event(event)
        except Exception:
            log.exception("gerrit %s: handling %s event failed", self.connection, event.type)
