"""`lockmaster logs serve`: the log store on the log host (docs/design.md, "Logs in one store").

It serves `logs.root` at logs.serve's address (default 127.0.0.1:8000) and, with logs.store
driver http, takes the executors' uploads into it, checked against the token in
logs.store.token-file. It needs no Temporal: it is a plain HTTP server over a directory.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from lockmaster.cli.context import err, fail, load, out

app = typer.Typer(help="The log store: serve the job logs and take the executors' uploads.",
                  no_args_is_help=True)


@app.command("serve")
def serve(
    config: Path | None = typer.Option(None, "--config", "-c", help="lockmaster.yaml"),
    listen: str | None = typer.Option(None, "--listen", help="address (default: logs.serve)"),
    port: int | None = typer.Option(None, "--port", help="port (default: logs.serve, 8000)"),
) -> None:
    """Serve logs.root over HTTP until interrupted; with logs.store driver http, also take
    authenticated uploads (PUT) into it."""
    from lockmaster.config.loader import ConfigError
    from lockmaster.config.logstore_check import check_log_store
    from lockmaster.config.models import LogServe
    from lockmaster.logserver import TokenError
    from lockmaster.workers.aux_servers import start_log_server

    cfg = load(config)
    try:
        check_log_store(cfg)
    except ConfigError as exc:
        err.print(str(exc), soft_wrap=True, markup=False)
        raise SystemExit(2) from None
    where = cfg.logs.serve or LogServe()
    cfg.logs.serve = LogServe(listen=listen or where.listen,
                              port=where.port if port is None else port)
    try:
        server = start_log_server(cfg)
    except TokenError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"the log server cannot listen on {cfg.logs.serve.listen}:{cfg.logs.serve.port}: "
             f"{exc.strerror or exc} (stop what uses the port, or pass --port)", 1)
    uploads = ("taking uploads (bearer token: logs.store.token-file)"
               if cfg.logs.store.driver == "http" else "serving only (logs.store driver "
               "directory: no uploads)")
    out.print(f"log store: {cfg.logs_root} on http://{cfg.logs.serve.listen}:{server.port}, "
              f"{uploads}; public URL {cfg.logs.url}", markup=False)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    server.stop()
    out.print("stopped")
