"""`lockmaster signatures check [DIR]` and `lockmaster signatures test FILE` (docs/signatures.md).

check: every signature file of DIR (default: the configured directory, signatures.directory)
is loaded; each bad one is printed with its line and the fix; exit 2 if any is bad.
test: FILE (a bad one: exit 2 with its error) is tried against the stored history, the builds
of the results database and their logs in the log store: hits on failed builds, hits on
successful builds (too broad), and how many failures it would classify that no signature names
now. Exit 0 when it matched something, 1 when it matched nothing (it says so).
"""

from __future__ import annotations

from pathlib import Path

import typer

from lockmaster.cli.context import EXIT_USAGE, err, fail, load, out

app = typer.Typer(help="Known-failure signatures: check them, try one on the stored history.",
                  no_args_is_help=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="lockmaster.yaml")


@app.command("check")
def check(
    directory: Path | None = typer.Argument(
        None, help="directory of signature files (default: the configured signatures.directory)"),
    config: Path | None = ConfigOpt,
) -> None:
    """Validate every signature file of DIRECTORY; each problem with its line and the fix."""
    from lockmaster.config.signatures import signatures_directory
    from lockmaster.signatures.format import load_directory, signature_files

    if directory is None:
        directory, _ = signatures_directory(load(config))
    if not directory.is_dir():
        fail(f"{directory}: no such directory of signatures (give one, or set "
             "signatures.directory in lockmaster.yaml)")
    signatures, errors = load_directory(directory)
    for error in errors:
        err.print(str(error), markup=False, soft_wrap=True)
    for signature in signatures:
        scope = []
        if signature.projects is not None:
            scope.append(f"projects {', '.join(signature.projects)}")
        if signature.jobs is not None:
            scope.append(f"jobs {', '.join(signature.jobs)}")
        out.print(f"{signature.name}: {signature.bug} ({', '.join(signature.files)}"
                  + (f"; {'; '.join(scope)}" if scope else "") + ")", markup=False)
    total = len(signature_files(directory))
    if errors:
        err.print(f"{directory}: {len(errors)} of {total} signature file(s) are bad",
                  markup=False)
        raise typer.Exit(EXIT_USAGE)
    out.print(f"{directory}: OK — {len(signatures)} signature(s)", markup=False)


@app.command("test")
def test(
    file: Path = typer.Argument(..., help="the signature file to try"),
    since: float = typer.Option(14.0, "--since", min=0.0,
                                help="days of history to try it on"),
    limit: int = typer.Option(1000, "--limit", min=1, help="at most this many builds, newest "
                                                           "first"),
    config: Path | None = ConfigOpt,
) -> None:
    """Try the signature FILE on the stored history before it is merged."""
    from lockmaster.signatures.format import SignatureError, load_signature

    try:
        signature = load_signature(file)
    except SignatureError as exc:
        err.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    cfg = load(config)
    from lockmaster.signatures.history import try_signature
    from lockmaster.signatures.results_history import HistoryError, stored_builds
    from lockmaster.signatures.sources import LogLocator

    try:
        builds = stored_builds(cfg, since_days=since, limit=limit)
    except HistoryError as exc:
        fail(str(exc), 1)
    locator = LogLocator(cfg)
    try:
        report = try_signature(signature, builds, locator.source,
                               max_bytes=cfg.signatures.max_bytes_per_file)
    finally:
        locator.close()
    for line in report.lines():
        out.print(line, markup=False)
    if not report.matched:
        raise typer.Exit(1)
