"""`lockmaster gerrit listen`: consume Gerrit's stream-events and route every event."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import typer

from lockmaster.cli.context import fail, load, out
from lockmaster.config.models import GerritConnection
from lockmaster.metrics.server import install_process_metrics, start_worker_metrics
from lockmaster.model.change import ReviewEvent
from lockmaster.review.gerrit import GerritDriver
from lockmaster.review.gerrit_catchup import events_since
from lockmaster.review.registry import review_drivers
from lockmaster.starters.event_journal import EventJournal, journal_path
from lockmaster.starters.gerrit_listen import StreamEventsListener
from lockmaster.starters.router import EventRouter
from lockmaster.temporal.client import connect

app = typer.Typer(help="Gerrit connection commands.", no_args_is_help=True)


@app.command("listen")
def listen(
    connection: str = typer.Option(..., "--connection", help="gerrit connection name"),
    config: Path | None = typer.Option(None, "--config", "-c", help="lockmaster.yaml"),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=1, max=65535,
        help="serve /metrics (events, intake lag) on metrics.listen at this port"),
) -> None:
    """Follow `gerrit stream-events` over SSH (reconnecting after drops) until interrupted;
    after any outage, what Gerrit's REST API says happened meanwhile is replayed first."""
    cfg = load(config)
    conn = cfg.connections.get(connection)
    if not isinstance(conn, GerritConnection):
        fail(f"connection {connection!r} is not a gerrit connection in the configuration")
    if conn.ssh is None:
        fail(f"connection {connection!r} has no ssh: section (host, user, key-file, "
             "known-hosts-file) for stream-events")
    try:
        # What was handed over, and what waits: events are caught up after any outage.
        journal = EventJournal(journal_path(cfg.state_path, connection))
    except (OSError, ValueError) as exc:
        fail(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main() -> None:
        install_process_metrics()  # before the client: the SDK's runtime records its metrics
        # The listener's own /metrics (events routed, intake lag); not bound: a warning.
        start_worker_metrics(None, cfg, "listener", port=metrics_port)
        client = await connect(cfg)
        drivers = review_drivers(cfg)
        router = EventRouter(cfg, client, drivers)
        driver = drivers[connection]
        assert isinstance(driver, GerritDriver)

        async def catch_up(since: float) -> list[ReviewEvent]:
            changes = await driver.changes_since(since)
            return events_since(changes, connection, since, conn.url)

        ssh = conn.ssh.model_copy(update={  # type: ignore[union-attr]
            "key_file": cfg.resolve(conn.ssh.key_file),  # type: ignore[union-attr]
            "known_hosts_file": cfg.resolve(conn.ssh.known_hosts_file),  # type: ignore[union-attr]
        })
        listener = StreamEventsListener(
            connection, conn.model_copy(update={"ssh": ssh}), on_event=_printing(router),
            journal=journal, catch_up=catch_up,
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

