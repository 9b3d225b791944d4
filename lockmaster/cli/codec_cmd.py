"""`lockmaster codec-server`: decrypt payloads for the Web UI and the `temporal` CLI, for those
who hold its token (lockmaster/temporal/codec_server.py, docs/codec.md). It needs no Temporal:
it holds the keys (codec.key-file) and answers /encode and /decode."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import typer

from lockmaster.cli.context import fail, load, out


def codec_server(
    config: Path | None = typer.Option(None, "--config", "-c", help="lockmaster.yaml"),
    listen: str | None = typer.Option(
        None, "--listen", help="address (default: codec.serve.listen, 127.0.0.1)"),
    port: int | None = typer.Option(None, "--port", help="port (default: codec.serve, 8081)"),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="the bearer token callers must send (default: "
        "codec.serve.token-file; required unless listening on loopback)"),
    cors_origins: list[str] | None = typer.Option(
        None, "--cors-origin", help="a Web UI origin allowed to call it from the browser, "
        "e.g. http://localhost:8080 (repeat; default: codec.serve.cors-origins)"),
) -> None:
    """Serve POST /encode and /decode (also /<namespace>/...) with the configuration's codec
    keys until interrupted: the Web UI (TEMPORAL_CODEC_ENDPOINT) and `temporal ...
    --codec-endpoint URL --codec-auth 'Bearer TOKEN'` then read and send encrypted payloads."""
    from lockmaster.config.codec import CodecServeConfig, check_origin
    from lockmaster.temporal.codec_server import CodecServer, CodecServerSetupError, codec_service

    cfg = load(config)
    serve = (cfg.codec.serve if cfg.codec else None) or CodecServeConfig()
    listen = listen or serve.listen
    port = serve.port if port is None else port
    if not 0 <= port < 65536:
        fail(f"--port {port}: not a port number (0-65535)")
    tokens = token_file or (cfg.resolve(serve.token_file) if serve.token_file else None)
    try:
        origins = [check_origin(o) for o in cors_origins] if cors_origins else serve.cors_origins
        service = codec_service(cfg, tokens, origins, listen)
    except ValueError as exc:
        fail(f"--cors-origin: {exc}")
    except CodecServerSetupError as exc:
        fail(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        server = CodecServer(service, listen, port).start()
    except OSError as exc:
        fail(f"the codec server cannot listen on {listen}:{port}: {exc.strerror or exc} "
             "(stop what uses the port, or pass --port)", 1)
    keys = service.codec.keys
    out.print(f"codec server on {server.url} (keys: {', '.join(keys.ids)}; encrypting with "
              f"{keys.current[0]}); auth: {'bearer token' if service.token else 'none (loopback)'}"
              f"; Web UI origins: {', '.join(service.origins) or 'none'}", markup=False)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    server.stop()
    out.print("stopped")
