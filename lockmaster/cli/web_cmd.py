"""`lockmaster web`: the web service: the public, read-only status page, the pages of nodes,
TEs, publications and build history, and their JSON API (docs/web.md). `lockmaster run`
starts the same service beside its workers."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from lockmaster.cli.context import fail, load, out


def web(
    config: Path | None = typer.Option(None, "--config", "-c", help="lockmaster.yaml"),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="state directory "
                                          "(default: the config's state-dir)"),
    listen: str | None = typer.Option(None, "--listen", help="address (default: web.listen, "
                                      "127.0.0.1)"),
    port: int | None = typer.Option(None, "--port", help="port (default: web.port, 9000)"),
) -> None:
    """Serve the status page and the JSON API until interrupted. Temporal need not be up: the
    pages say it is unreachable (HTTP 503) and show the status again once it is."""
    from lockmaster.web.server import WebServer

    cfg = load(config, state_dir)
    if port is not None and not 0 <= port <= 65535:
        fail(f"--port {port} is not a port (0-65535)")
    server = WebServer(cfg, listen=listen, port=port)
    try:
        server.start()
    except OSError as exc:
        fail(f"the web service cannot listen on {server.listen}:{server.port}: "
             f"{exc.strerror or exc} (stop what uses the port, or pass --port)", 1)
    out.print(f"web: status page on {server.url} (public URL {cfg.web.url}); Temporal at "
              f"{cfg.temporal.address}", markup=False)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    server.stop()
    out.print("stopped")
