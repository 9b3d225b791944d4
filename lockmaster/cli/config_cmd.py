"""`lockmaster config check FILE`."""

from __future__ import annotations

from pathlib import Path

import typer

from lockmaster.cli.context import EXIT_USAGE, err, out
from lockmaster.config.loader import ConfigError, load_config

app = typer.Typer(help="Check deployment configuration files.", no_args_is_help=True)


@app.command("check")
def check(file: Path = typer.Argument(..., help="lockmaster.yaml to check")) -> None:
    """Validate FILE; print what it defines, or every problem with its line."""
    try:
        config = load_config(file)
    except ConfigError as exc:
        err.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    out.print(
        f"{file}: OK — {len(config.connections)} connection(s), {len(config.pipelines)} "
        f"pipeline(s), {len(config.projects)} project(s), {len(config.jobs)} job(s), "
        f"{len(config.nodes.providers)} node provider(s)"
    )
