"""Getting every build's logs into the one log store (logs.store driver http), live and at the end,
and never losing them to a store that is down (docs/design.md, "Logs in one store").

The executor writes a build's log and artifacts into its local spool, `<spool>/<log path>/`,
as it always wrote them into the logs root. While the job runs, its job-output.txt is pushed
every `live-interval` seconds (appending what is new): the store shows a running job's log a
few seconds behind. When the build ends, everything is delivered before the result is
returned (bounded by `upload-timeout`), so the report's link works; then the local copy goes.
A delivery that fails does not fail the build: the directory is marked undelivered and the
spool delivery (a thread beside the executor's workers) puts it again every `retry-interval`
seconds until the store takes it. Each failure is logged: what, where, why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from lockmaster.config.models import LockmasterConfig
from lockmaster.execution.log_upload import (
    PENDING,
    LogFollower,
    LogStoreClient,
    UploadError,
    deliver,
)
from lockmaster.execution.logs import LOG_NAME, log_dir

log = logging.getLogger(__name__)


def _forget(directory: Path, root: Path) -> None:
    """Remove a delivered build's local copy and the directories it leaves empty."""
    shutil.rmtree(directory, ignore_errors=True)
    parent = directory.parent
    while parent != root and parent.is_relative_to(root):
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


class BuildShipment:
    """One build's logs on their way to the store."""

    def __init__(self, shipping: LogShipping, log_path: str) -> None:
        self.shipping = shipping
        self.log_path = log_path.strip("/")
        self.directory = log_dir(shipping.spool, log_path)
        self.follower = LogFollower(shipping.client, f"{self.log_path}/{LOG_NAME}",
                                self.directory / LOG_NAME)
        self._task: asyncio.Task[None] | None = None
        self._said: str | None = None

    def start(self) -> BuildShipment:
        # A marker left by an earlier try of this build: its log is being written anew.
        (self.directory / PENDING).unlink(missing_ok=True)
        self._task = asyncio.create_task(self._live())
        return self

    async def _live(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.follower.push)
            except (UploadError, OSError) as exc:
                if str(exc) != self._said:  # once per kind of failure, not every few seconds
                    self._said = str(exc)
                    log.warning("live log of %s not in the log store yet: %s (kept in %s; "
                                "delivered when the build ends or later)", self.log_path, exc,
                                self.directory)
            await asyncio.sleep(self.shipping.live_interval)

    async def finish(self) -> bool:
        """Deliver everything (the log is closed); never raises. False: left in the spool."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            async with asyncio.timeout(self.shipping.upload_timeout):
                await asyncio.to_thread(deliver, self.shipping.client, self.directory,
                                        self.log_path, self.follower)
        except (UploadError, OSError, TimeoutError) as exc:
            why = (f"not done within {self.shipping.upload_timeout:g} s"
                   if isinstance(exc, TimeoutError) else str(exc))
            with contextlib.suppress(OSError):
                (self.directory / PENDING).write_text(f"{time.time():.0f} {why}\n")
            log.error("logs of %s not delivered to the log store: %s; kept in %s and "
                      "delivered again every %g s", self.log_path, why, self.directory,
                      self.shipping.retry_interval)
            return False
        except Exception as exc:  # never fail a build over its logs' upload
            with contextlib.suppress(OSError):
                (self.directory / PENDING).write_text(f"{time.time():.0f} {exc!r}\n")
            log.exception("logs of %s not delivered to the log store", self.log_path)
            return False
        await asyncio.to_thread(_forget, self.directory, self.shipping.spool)
        return True


class LogShipping:
    """The http log store, as the build runner uses it."""

    def __init__(self, client: LogStoreClient, spool: Path, *, live_interval: float = 2.0,
                 upload_timeout: float = 120.0, retry_interval: float = 30.0) -> None:
        self.client = client
        self.spool = spool
        self.live_interval = live_interval
        self.upload_timeout = upload_timeout
        self.retry_interval = retry_interval

    def start(self, log_path: str) -> BuildShipment:
        return BuildShipment(self, log_path).start()


def log_shipping(config: LockmasterConfig) -> LogShipping | None:
    """None for driver directory: the executor writes into the store itself."""
    store = config.logs.store
    if store.driver != "http":
        return None
    assert store.url is not None and store.token_file is not None
    return LogShipping(LogStoreClient(store.url, config.resolve(store.token_file)),
                       config.logs_spool, live_interval=store.live_interval,
                       upload_timeout=store.upload_timeout, retry_interval=store.retry_interval)


class SpoolDelivery:
    """Delivers the spool's undelivered builds, oldest first, every `interval` seconds (and
    once at start: what a previous run of the executor left)."""

    def __init__(self, shipping: LogShipping) -> None:
        self.shipping = shipping
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="log spool delivery",
                                        daemon=True)

    def undelivered(self) -> list[Path]:
        spool = self.shipping.spool
        if not spool.is_dir():
            return []
        markers = []
        for top, _dirs, names in os.walk(spool):
            if PENDING in names:
                marker = Path(top) / PENDING
                with contextlib.suppress(OSError):
                    markers.append((marker.stat().st_mtime, marker.parent))
        return [directory for _, directory in sorted(markers)]

    def deliver_once(self) -> int:
        """Deliver what can be; stops at the first failure (the store is likely down)."""
        delivered = 0
        spool = self.shipping.spool
        for directory in self.undelivered():
            log_path = directory.relative_to(spool).as_posix()
            marker = directory / PENDING
            try:
                before = marker.read_text()
                deliver(self.shipping.client, directory, log_path)
            except (UploadError, OSError) as exc:
                log.warning("%d build log(s) in %s still not delivered to the log store: %s",
                            len(self.undelivered()) - delivered, spool, exc)
                break
            with contextlib.suppress(OSError):
                # A new try of the build (an activity retry, here) took the directory over
                # meanwhile (its start removed the marker): it is that try's to deliver.
                if marker.read_text() == before:
                    _forget(directory, spool)
            delivered += 1
            log.info("delivered the spooled logs of %s to the log store", log_path)
        return delivered

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_once()
            except Exception:  # the thread must keep going
                log.exception("log spool delivery")
            self._stop.wait(self.shipping.retry_interval)

    def start(self) -> SpoolDelivery:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.shipping.client.timeout + 5)
