"""`lockmaster dashboards generate`: Grafana dashboards from the configuration (docs/metrics.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from lockmaster.cli.context import fail, load, out

app = typer.Typer(help="Grafana dashboards: generate them from the configuration.",
                  no_args_is_help=True)


@app.command("generate")
def generate(
    config: Path | None = typer.Option(None, "--config", "-c", help="lockmaster.yaml"),
    out_dir: Path = typer.Option(Path("deploy/grafana/dashboards"), "--out",
                                 help="directory for the JSON files"),
) -> None:
    """Write overview.json and one region-<provider>-<region>.json per OpenStack provider
    region of the configuration (region files of providers no longer configured are removed)."""
    from lockmaster.metrics.dashboards import write

    cfg = load(config)
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out {out_dir}: exists and is not a directory; give a directory")
    try:
        written = write(cfg, out_dir)
    except OSError as exc:
        fail(f"cannot write the dashboards into {out_dir}: {exc.strerror or exc}", 1)
    for path in written:
        out.print(f"wrote {path}", markup=False)
