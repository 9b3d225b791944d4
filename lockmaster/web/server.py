"""Running the web service: in its own thread with its own event loop, so that `lockmaster web`
and `lockmaster run` (beside its workers, as an auxiliary server) start it the same way.

It needs no Temporal to start: the client connects on the first request and again after
Temporal went away (pages and /api/ say 503 meanwhile). The results database is opened when
configured; one that cannot be opened costs the estimates and the build pages, not the server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from pathlib import Path

from aiohttp import web

from lockmaster.config.models import LockmasterConfig
from lockmaster.web.app import build_app
from lockmaster.web.context import WebContext

log = logging.getLogger(__name__)


def open_results_quietly(config: LockmasterConfig, migrate: bool = True) -> object | None:
    """The results database, or None (disabled, or it cannot be opened: said in the log).
    Beside the workers (`lockmaster run`) it is not migrated here: the orchestrator does that,
    and two processes migrating one SQLite file at once would trip over each other."""
    if not config.results.enabled:
        return None
    try:
        from lockmaster.results.connect import open_results

        return open_results(config, migrate=migrate)
    except Exception as exc:  # the status page does without it
        log.warning("web: the results database cannot be opened (%s); no build history "
                    "and no estimates from it", exc)
        return None


class WebServer:
    """The web service on listen:port (port 0: any free port, see `.port`)."""

    def __init__(self, config: LockmasterConfig, *, listen: str | None = None,
                 port: int | None = None, state_dir: Path | None = None,
                 results: object | None = None, open_results: bool = True,
                 migrate_results: bool = True) -> None:
        self.config = config
        self.listen = listen or config.web.listen
        self.port = config.web.port if port is None else port
        self.state_dir = state_dir or config.state_path
        self._results = results
        self._open_results = open_results and results is None
        self._migrate_results = migrate_results
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.ctx: WebContext | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}:{self.port}"

    def start(self) -> WebServer:
        """Listening when this returns; OSError when the port is taken (nothing left running)."""
        started: Future[int] = Future()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True,
                                        name="lockmaster-web")
        self._thread.start()
        try:
            self.port = started.result(timeout=60)
        except BaseException:
            self._thread.join(timeout=5)
            raise
        return self

    def _run(self, started: Future[int]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            port = loop.run_until_complete(self._serve())
        except BaseException as exc:
            started.set_exception(exc)
            loop.run_until_complete(self._cleanup())
            loop.close()
            return
        started.set_result(port)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._cleanup())
            loop.close()

    async def _serve(self) -> int:
        results = self._results
        if self._open_results:
            results = await asyncio.to_thread(open_results_quietly, self.config,
                                              self._migrate_results)
            self._results = results
        self.ctx = WebContext(config=self.config, state_dir=self.state_dir, client=None,
                              results=results)  # type: ignore[arg-type]
        self._runner = web.AppRunner(build_app(self.ctx), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen, self.port)
        await site.start()
        server = site._server  # the only way aiohttp tells the port it got for port 0
        sockets = getattr(server, "sockets", None) or []
        return sockets[0].getsockname()[1] if sockets else self.port

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._open_results and self._results is not None:
            close = getattr(self._results, "close", None)
            if close is not None:
                close()

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
