"""`lockmaster run` (the main job) and `lockmaster worker ROLE`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import typer

from lockmaster.cli.context import config_path, err, fail, load, out
from lockmaster.config.models import LocalConnection, LockmasterConfig
from lockmaster.demo import project as demo
from lockmaster.demo.packaging import run_packaging_demo
from lockmaster.metrics.server import install_process_metrics
from lockmaster.model.change import ReviewEvent
from lockmaster.review.local import LocalReviewStore
from lockmaster.review.registry import review_drivers
from lockmaster.starters.router import EventRouter
from lockmaster.starters.waiting import wait_for_check, web_link
from lockmaster.temporal.client import TemporalConfigError, connect, data_converter
from lockmaster.temporal.devserver import DevServer
from lockmaster.temporal.setup import register_search_attributes
from lockmaster.workers.aux_servers import (
    CODEC_SERVER,
    PACKAGE_CACHE,
    WEB,
    AuxServers,
    start_aux_servers,
)
from lockmaster.workers.reload import Reloader
from lockmaster.workers.reload import install as install_signals
from lockmaster.workers.run import ROLES, run_workers

ConfigOpt = typer.Option(None, "--config", "-c", help="lockmaster.yaml (default: embedded dev)")


def _stop_on_signals(stop: asyncio.Event, reloader: Reloader | None = None) -> None:
    """Ctrl-C, a kill, or the terminal going away all stop cleanly: the dev server runs in its
    own session (so Ctrl-C reaches us first) and would otherwise outlive us. Any other SIGHUP
    reloads the configuration file (workers/reload.py) once `reloader` is there."""
    install_signals(stop, reloader)


def worker(
    role: str = typer.Argument(..., help=f"one of: {', '.join(ROLES)}"),
    config: Path | None = ConfigOpt,
) -> None:
    """Run a worker role (orchestrator, executor, launcher, publisher, te-host:<host>, or all)
    until interrupted."""
    if role not in ROLES and not role.startswith("te-host:"):
        fail(f"unknown worker role {role!r}; choose one of: {', '.join(ROLES)}, "
             "or te-host:<host>")
    cfg = load(config)
    if role.startswith("te-host:") and role.split(":", 1)[1] not in {
            h.name for h in cfg.testenvs.hosts}:
        fail(f"no TE host {role.split(':', 1)[1]!r} under testenvs.hosts in the configuration")
    if role in ("executor", "all"):
        _check_log_store(cfg)  # its builds' logs must have somewhere to go
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        install_process_metrics()  # before the client: the SDK's runtime records its metrics
        try:
            client = await connect(cfg)
        except TemporalConfigError as exc:  # the configuration's certificates, keys: exit 2
            fail(str(exc))
        except RuntimeError as exc:
            fail(f"cannot reach Temporal at {cfg.temporal.address}: {exc}", 1)
        _stop_on_signals(stop, Reloader(client, config_path(config)[0], cfg, role))
        out.print(f"lockmaster {role} worker polling {cfg.temporal.address}")
        await run_workers(client, cfg, role, stop)

    asyncio.run(main())


def run(
    config: Path | None = ConfigOpt,
    state_dir: Path | None = typer.Option(None, "--state-dir", help="where state is kept"),
    demo_change: bool = typer.Option(True, "--demo/--no-demo", help="drive a demo change"),
    exit_after_demo: bool = typer.Option(
        False, "--exit-after-demo", help="stop once the demo change is checked (CI, scripts)"
    ),
) -> None:
    """The main job: Temporal dev server, every worker, the log server; a demo change checked
    end to end; then ready for `lockmaster change ...` until Ctrl-C."""
    cfg = load(config, state_dir)
    _check_log_store(cfg)
    try:
        data_converter(cfg)  # the codec's key file, before the dev server starts: exit 2
    except TemporalConfigError as exc:
        fail(str(exc))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    code = asyncio.run(_main(cfg, demo_change, exit_after_demo, config_path(config)[0]))
    raise typer.Exit(code)


async def _main(cfg: LockmasterConfig, demo_change: bool, exit_after_demo: bool,
                config_file: Path | None = None) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    # Before any Temporal client (the dev server's start makes one): the SDK's runtime then
    # records its metrics into the registry /metrics serves.
    install_process_metrics()
    cfg.state_path.mkdir(parents=True, exist_ok=True)
    server = None
    dev = cfg.temporal.dev_server
    if dev.enabled:
        server = DevServer(cfg.state_path / dev.db_file, dev.port, dev.ui_port,
                           ui_codec_endpoint=ui_codec_endpoint(cfg))
        try:
            await server.start()
        except RuntimeError as exc:
            fail(str(exc), 1)
        out.print(f"Temporal dev server on {server.address} (SQLite: {server.db_file}); "
                  f"Web UI: {cfg.temporal.web_url}")
    code = 0
    servers: AuxServers | None = None
    try:
        client = await connect(cfg)
        if config_file is not None:  # SIGHUP: re-read it, apply it to the running workflows
            _stop_on_signals(stop, Reloader(client, config_file, cfg, "all", _said))
        await register_search_attributes(client)
        # The log server, mirrors and package cache; one that cannot start says why, and the
        # rest runs on without it.
        servers = await asyncio.to_thread(start_aux_servers, cfg, "all", _not_started,
                                          web=True)
        workers = asyncio.create_task(run_workers(client, cfg, "all", stop, servers))
        out.print(f"workers running (orchestrator, executor, launcher, publisher); logs at "
                  f"{cfg.logs.url}")
        if web_url := servers.url(WEB):
            out.print(f"status page: {web_url}")
        if codec_url := servers.url(CODEC_SERVER):
            out.print(f"codec server on {codec_url}: the Web UI and `temporal ... "
                      f"--codec-endpoint {codec_url}` show the encrypted payloads")
        if cache_url := servers.url(PACKAGE_CACHE):
            out.print(f"package cache (apt-cacher-ng) on {cache_url}: build and install roots "
                      "fetch the distribution through it (`lockmaster packaging cache`)")
        if demo_change:
            code = await _demo(cfg, client)
            if exit_after_demo:
                stop.set()
        if not stop.is_set():
            out.print("\nReady. Try: lockmaster change upload --project demo/hello "
                      "--file NOTES=hi --wait   (Ctrl-C stops everything)")
        await workers
    finally:
        if servers is not None:
            await asyncio.to_thread(servers.stop)
        if server:
            await server.stop()
        out.print("stopped")
    return code


def ui_codec_endpoint(cfg: LockmasterConfig) -> str | None:
    """Where the dev server's Web UI (in the browser) reaches the codec server `lockmaster run`
    starts: on the UI's own host name when it listens on loopback or everywhere, so that its
    session cookie counts as same-site (docs/codec.md)."""
    serve = cfg.codec.serve if cfg.codec else None
    if serve is None:
        return None
    from urllib.parse import urlsplit

    host = serve.listen
    if host in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::"):
        host = urlsplit(cfg.temporal.web_url).hostname or "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{serve.port}"


def _check_log_store(cfg: LockmasterConfig) -> None:
    """The log store's token file and spool, before anything starts (exit 2)."""
    from lockmaster.config.loader import ConfigError
    from lockmaster.config.logstore_check import check_log_store

    try:
        check_log_store(cfg)
    except ConfigError as exc:
        err.print(str(exc), soft_wrap=True, markup=False)
        raise SystemExit(2) from None


def _said(message: str) -> None:
    out.print(message, markup=False)


def _not_started(message: str) -> None:
    err.print(f"warning: {message}", markup=False, soft_wrap=True)


async def _demo(cfg: LockmasterConfig, client) -> int:  # type: ignore[no-untyped-def]
    """Upload a demo change to demo/hello and wait for its check."""
    local = [n for n, c in cfg.connections.items() if isinstance(c, LocalConnection)]
    if not local or cfg.project(demo.PROJECT) is None:
        out.print("(no demo: the configuration has no local connection with demo/hello)")
        return 0
    store = LocalReviewStore(cfg.local_review_path(local[0]), local[0])
    await asyncio.to_thread(store.create_project, demo.PROJECT, demo.FILES)
    info = await asyncio.to_thread(
        store.upload, demo.PROJECT, files=demo.CHANGE_FILES, subject="Add farewell()"
    )
    out.print(f"\ndemo: uploaded change {info.number},{info.patchset} to {demo.PROJECT}")
    drivers = review_drivers(cfg)
    router = EventRouter(cfg, client, drivers)
    event = ReviewEvent(
        type="patchset-created", connection=info.connection, project=info.project,
        branch=info.branch, change=info.number, patchset=info.patchset, commit=info.commit,
        change_id=info.change_id, url=info.url,
    )
    actions = await router.route(event)
    started = [a for a in actions if a.workflow_id and a.action in ("started", "already-running")]
    if not started:
        out.print(f"demo: nothing started: {', '.join(map(str, actions))}")
        return 1
    wid = started[0].workflow_id
    assert wid
    out.print(f"demo: check started: {web_link(cfg, wid)}")
    checked = False
    with contextlib.suppress(Exception):
        text = await wait_for_check(cfg, wid)
        out.print(text, markup=False)
        out.print(f"demo: `lockmaster change show {info.number}` shows the vote and message")
        checked = ": SUCCESS" in text.splitlines()[0]
    if not checked:
        return 1
    try:
        packaged = await run_packaging_demo(
            cfg, client, store, router, lambda line: out.print(line, markup=False))
    except Exception as exc:  # say what broke; the rest keeps running
        out.print(f"packaging demo: {type(exc).__name__}: {exc}", markup=False)
        packaged = False
    return 0 if packaged else 1
