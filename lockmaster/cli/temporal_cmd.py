"""`lockmaster temporal setup`: prepare a Temporal server for lockmaster."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from lockmaster.cli.context import fail, load, out
from lockmaster.temporal.client import connect
from lockmaster.temporal.setup import register_search_attributes

app = typer.Typer(help="Temporal server administration.", no_args_is_help=True)


@app.command("setup")
def setup(
    config: Path | None = typer.Option(None, "--config", "-c", help="lockmaster.yaml"),
    address: str | None = typer.Option(None, help="HOST:PORT, overriding temporal.address"),
) -> None:
    """Register lockmaster's custom search attributes (idempotent)."""
    cfg = load(config)

    async def main() -> list[str]:
        client = await connect(cfg, address=address)
        return await register_search_attributes(client)

    try:
        added = asyncio.run(main())
    except RuntimeError as exc:
        fail(f"cannot reach Temporal at {address or cfg.temporal.address}: {exc}", 1)
    out.print(f"search attributes added: {', '.join(added)}" if added else
              "search attributes: all present")
