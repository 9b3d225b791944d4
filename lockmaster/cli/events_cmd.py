"""`lockmaster events`: the events that hooks and `lockmaster change` commands could not hand
over when they ran (Temporal down), kept on disk (starters/kept_events.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from lockmaster.cli.context import fail, load, out
from lockmaster.config.models import LockmasterConfig
from lockmaster.model.change import ReviewEvent
from lockmaster.starters.dispatch import dispatch_or_keep
from lockmaster.starters.kept_events import KeptEvents, kept_events

app = typer.Typer(help="Events kept for later: list them, hand them over.",
                  no_args_is_help=True)


def _kept(connection: str, config: Path | None) -> tuple[LockmasterConfig, KeptEvents]:
    """The configuration and the connection's kept events (exit 2: no such connection)."""
    cfg = load(config)
    if connection not in cfg.connections:
        fail(f"no connection {connection!r} in the configuration "
             f"(connections: {', '.join(cfg.connections) or 'none'})")
    return cfg, kept_events(cfg.state_path, connection)


@app.command("kept")
def kept(
    connection: str = typer.Option(..., "--connection", help="connection name"),
    config: Path | None = typer.Option(None, "--config", "-c", help="lockmaster.yaml"),
) -> None:
    """The events of a connection waiting to be handed over, oldest first."""
    _, spool = _kept(connection, config)
    for path in spool.pending():
        try:
            event = ReviewEvent.model_validate_json(path.read_text())
        except (OSError, ValueError) as exc:
            out.print(f"{path.name}: unreadable ({exc})", markup=False)
            continue
        out.print(f"{path.name}: {event.type} {event.project} change {event.change}",
                  markup=False)
    out.print(f"{len(spool.pending())} event(s) kept in {spool.directory}", markup=False)


@app.command("flush")
def flush(
    connection: str = typer.Option(..., "--connection", help="connection name"),
    config: Path | None = typer.Option(None, "--config", "-c", help="lockmaster.yaml"),
) -> None:
    """Hand over the kept events, oldest first (hooks and `change` commands also do it first)."""
    cfg, spool = _kept(connection, config)
    waiting = len(spool.pending())
    if not waiting:
        fail(f"nothing to hand over: no event of {connection!r} is kept in {spool.directory}", 1)
    done = asyncio.run(dispatch_or_keep(cfg, None, spool))
    for action in done.actions:
        out.print(str(action))
    if done.error is not None:
        fail(f"handed over {done.flushed} of {waiting} kept event(s); the next failed "
             f"({done.error}): {waiting - done.flushed} still kept in {spool.directory}", 1)
    out.print(f"handed over {done.flushed} kept event(s)")
