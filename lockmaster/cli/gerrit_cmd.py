"""`lockmaster gerrit listen`: consume Gerrit's stream-events and route every event."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import typer

from lockmaster.cli.context import fail, load, out
from lockmaster.config.models import GerritConnection
from lockmaster.review.registry import review_drivers
from lockmaster.starters.gerrit_listen import StreamEventsListener
from lockmaster.starters.router import EventRouter
from lockmaster.temporal.client import connect

app = typer.Typer(help="Gerrit connection commands.", no_args_is_help=True)


@app.command("listen")
def listen(
    connection: str = typer.Option(..., "--connection", help="gerrit connection name"),
    config: Path | None = typer.Option(None, "--config", "-c", help="lockmaster.yaml"),
) -> None:
    """Follow `gerrit stream-events` over SSH (reconnecting after drops) until interrupted."""
    cfg = load(config)
    conn = cfg.connections.get(connection)
    if not isinstance(conn, GerritConnection):
        fail(f"connection {connection!r} is not a gerrit connection in the configuration")
    if conn.ssh is None:
        fail(f"connection {connection!r} has no ssh: section (host, user, key-file, "
             "known-hosts-file) for stream-events")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main() -> None:
        client = await connect(cfg)
        router = EventRouter(cfg, client, review_drivers(cfg))
        ssh = conn.ssh.model_copy(update={  # type: ignore[union-attr]
            "key_file": cfg.resolve(conn.ssh.key_file),  # type: ignore[union-attr]
            "known_hosts_file": cfg.resolve(conn.ssh.known_hosts_file),  # type: ignore[union-attr]
        })
        listener = StreamEventsListener(
            connection, conn.model_copy(update={"ssh": ssh}), on_event=_printing(router)
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, listener.stop)
        await listener.run()

    asyncio.run(main())


def _printing(router: EventRouter):  # type: ignore[no-untyped-def]
    async def on_event(event) -> None:  # type: ignore[no-untyped-def]
        for action in await router.route(event):
            out.print(f"{event.type} {event.project} {event.change}: {action}")

    return on_event
