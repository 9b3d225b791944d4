"""SIGHUP: a worker re-reads its configuration file and brings the running workflows to it, as
`lockmaster config apply` does (starters/reconfigure.py, the same function). A file that does not
validate is logged with its problems and the worker keeps running on what it had.

Only roles that run the workflows (orchestrator, all) apply: one process per deployment sends
the signals, however many workers get the SIGHUP. The worker process's own settings (Temporal
address and prefixes, state directory, connections, what its activities were built with) take
a restart; the Temporal section and state directory of the running process are kept.

A SIGHUP is also what a terminal sends when it goes away: a process that had a controlling
terminal and has lost it stops instead (as before), so closing the terminal of `lockmaster run`
still stops everything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client

from lockmaster.config.loader import ConfigError, load_config
from lockmaster.config.models import LockmasterConfig
from lockmaster.metrics.server import reconfigure_metrics
from lockmaster.starters.reconfigure import ApplyResult, apply_config

log = logging.getLogger(__name__)
APPLYING_ROLES = ("orchestrator", "all")


class Reloader:
    """Reloads `path` for a worker running `config` (what it started with) in `role`."""

    def __init__(self, client: Client, path: Path, config: LockmasterConfig, role: str,
                 say: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.path = path
        self.config = config
        self.role = role
        self.say = say or log.info
        self._running: asyncio.Task[ApplyResult | None] | None = None
        self._again = False

    def request(self) -> None:
        """From the signal handler: reload now, or once more after the reload under way (a
        burst of SIGHUPs is one or two reloads, never two at once)."""
        if self._running is not None and not self._running.done():
            self._again = True
            return
        self._running = asyncio.get_running_loop().create_task(self._reload_until_settled())

    async def _reload_until_settled(self) -> ApplyResult | None:
        result = await self.reload()
        while self._again:
            self._again = False
            result = await self.reload()
        return result

    async def wait(self) -> ApplyResult | None:
        """The reload under way, if any (tests)."""
        return await self._running if self._running is not None else None

    async def reload(self) -> ApplyResult | None:
        """Read, validate and apply the file; None when it was not applied."""
        try:
            new = await asyncio.to_thread(load_config, self.path)
        except ConfigError as exc:
            log.error("configuration reload: %s is not valid; still running on the previous "
                      "configuration:\n%s", self.path, exc)
            return None
        new.state_dir = self.config.state_dir
        if new.temporal != self.config.temporal:
            log.warning("configuration reload: the temporal section changed; it takes a restart "
                        "(this worker keeps %s, prefix %r)", self.config.temporal.address,
                        self.config.temporal.workflow_id_prefix)
            new.temporal = self.config.temporal
        if self.role not in APPLYING_ROLES:
            self.say(f"configuration {self.path} is valid; a {self.role} worker applies nothing "
                     "(the orchestrator does; this worker's own settings take a restart)")
            return None
        try:
            result = await apply_config(self.client, new, start_missing=True)
        except Exception as exc:  # Temporal unreachable...: the worker keeps running
            log.error("configuration reload: could not apply %s: %s", self.path, exc)
            return None
        reconfigure_metrics(new)  # its gauges are labelled by pipelines and regions
        self.say(f"configuration {self.path} applied:")
        for line in result.lines() or ["no running workflows to reconfigure"]:
            self.say(f"  {line}")
        return result


def has_terminal() -> bool:
    """Does this process have a controlling terminal (it opens /dev/tty)?"""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True


def install(stop: asyncio.Event, reloader: Reloader | None) -> None:
    """SIGINT and SIGTERM stop; SIGHUP reloads (`reloader`), unless it is the hang-up of the
    terminal this process had (then it stops, as Ctrl-C)."""
    loop = asyncio.get_running_loop()
    had_terminal = has_terminal()

    def hangup() -> None:
        if reloader is None or (had_terminal and not has_terminal()):
            stop.set()
        else:
            reloader.request()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hangup)
