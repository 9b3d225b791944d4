"""`lockmaster results migrate|check|builds`: the results database (docs/results.md).

The workers migrate it themselves when they open it; `migrate` is for doing it ahead (before
starting the workers of a new version), `check` says where it stands, `builds` shows the last
builds from the command line.
"""

from __future__ import annotations

from pathlib import Path

import typer

from lockmaster.cli.context import fail, load, out

app = typer.Typer(help="The results database: migrate, check, recent builds.",
                  no_args_is_help=True)

ConfigOption = typer.Option(None, "--config", "-c", help="lockmaster.yaml")


def _where(cfg: object) -> str:
    from lockmaster.results.connect import results_url

    return results_url(cfg).render_as_string(hide_password=True)  # type: ignore[arg-type]


@app.command("migrate")
def migrate(config: Path | None = ConfigOption) -> None:
    """Bring the results database to the newest schema (creating it if needed)."""
    from lockmaster.results import ResultsDBError
    from lockmaster.results.connect import open_results
    from lockmaster.results.migrate import current

    cfg = load(config)
    try:
        db = open_results(cfg)
    except ResultsDBError as exc:
        fail(str(exc), 1)
    try:
        out.print(f"results database {_where(cfg)}: at revision {current(db.engine)} (newest)",
                  markup=False)
    finally:
        db.close()


@app.command("check")
def check(config: Path | None = ConfigOption) -> None:
    """Say whether the results database is reachable and at the newest schema (exit 1 if
    not: run `lockmaster results migrate`)."""
    from lockmaster.results import ResultsDB, ResultsDBError
    from lockmaster.results.connect import results_url
    from lockmaster.results.migrate import current, differences, head

    cfg = load(config)
    if not cfg.results.enabled:
        fail("the results database is disabled (results.enabled: false)", 1)
    try:
        db = ResultsDB.open(results_url(cfg), migrate=False)
        at = current(db.engine)
    except (ResultsDBError, Exception) as exc:  # (a driver error: unreachable, refused)
        fail(f"results database {_where(cfg)}: cannot be read: {exc}", 1)
    try:
        newest = head()
        if at != newest:
            fail(f"results database {_where(cfg)}: at revision {at or 'none (empty)'}, the "
                 f"newest is {newest}: run `lockmaster results migrate`", 1)
        extra = differences(db.engine)
        if extra:
            fail(f"results database {_where(cfg)}: at {at} but its schema differs from "
                 f"lockmaster's: {'; '.join(extra)}", 1)
        out.print(f"results database {_where(cfg)}: ok, at revision {at}", markup=False)
    finally:
        db.close()


@app.command("builds")
def builds(
    config: Path | None = ConfigOption,
    project: str | None = typer.Option(None, "--project"),
    job: str | None = typer.Option(None, "--job"),
    pipeline: str | None = typer.Option(None, "--pipeline"),
    result: str | None = typer.Option(None, "--result"),
    change: int | None = typer.Option(None, "--change"),
    limit: int = typer.Option(20, "--limit"),
) -> None:
    """The newest builds, filtered (one line each)."""
    from lockmaster.results import ResultsDBError
    from lockmaster.results.connect import open_results
    from lockmaster.results.queries import BadFilter, BuildFilter, list_builds

    cfg = load(config)
    params = {"project": project, "job": job, "pipeline": pipeline, "result": result,
              "change": change, "limit": limit}
    try:
        wanted = BuildFilter.parse(params)
        db = open_results(cfg)
    except BadFilter as exc:
        fail(str(exc))
    except ResultsDBError as exc:
        fail(str(exc), 1)
    try:
        page = list_builds(db, wanted)
    except BadFilter as exc:
        fail(str(exc))
    finally:
        db.close()
    for b in page.builds:
        took = f"{b.duration:.0f}s" if b.duration is not None else "-"
        ended = b.end_time.strftime("%Y-%m-%d %H:%M:%S") if b.end_time else "-"
        out.print(f"{ended}  {b.pipeline:<8} {b.project} {b.change},{b.patchset}  {b.job}  "
                  f"{b.result} in {took}  {b.log_url or ''}", markup=False, soft_wrap=True)
    if not page.builds:
        out.print("no builds match", markup=False)
