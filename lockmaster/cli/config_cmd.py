"""`lockmaster config check FILE` and `lockmaster config apply FILE`.

`apply` validates FILE first (a bad file: every problem with its line, exit 2, nothing sent), then
brings every running gate queue, node pool and TE broker of the deployment (FILE's Temporal
settings) to it, live: one line per workflow says what changed. Exit 1 when nothing was running
or a signal failed. The workers keep reading their own file (`--config`, LOCKMASTER_CONFIG or
./lockmaster.yaml): apply that file, or they would bring the old settings back at their next
start. Sending the orchestrator worker SIGHUP does the same as `apply` with the file it reads.
"""

from __future__ import annotations

from pathlib import Path

import typer

from lockmaster.cli.context import EXIT_USAGE, err, fail, out, with_client
from lockmaster.config.loader import ConfigError, load_config

app = typer.Typer(help="Check deployment configuration files, and apply them live.",
                  no_args_is_help=True)


@app.command("check")
def check(file: Path = typer.Argument(..., help="lockmaster.yaml to check")) -> None:
    """Validate FILE; print what it defines, or every problem with its line."""
    from lockmaster.config.logstore_check import TOKEN_FILE, check_log_store, log_store_problems
    from lockmaster.signatures.config_check import check_signatures

    try:
        config = load_config(file)
        # The log store's settings beyond their shape; its token file is a secret only the
        # executors and the log host have (they refuse to start without it): elsewhere, a
        # note (the same file is checked on every host of the deployment).
        check_log_store(config, file, ignore=(TOKEN_FILE,))
        signatures = check_signatures(config, file)  # every known-failure signature file
    except ConfigError as exc:
        err.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    for where, message in log_store_problems(config):
        if where == TOKEN_FILE:
            err.print(f"note: {'.'.join(where)}: {message} (needed on the executors and the "
                      "log host, which refuse to start without it)", markup=False,
                      soft_wrap=True)
    if config.codec is not None:  # payload encryption: every Temporal client needs the keys
        from lockmaster.temporal.codec import KeyFileError, load_keys

        try:
            keys = load_keys(config.resolve(config.codec.key_file))
        except KeyFileError as exc:
            err.print(f"note: codec.key-file: {exc} (needed wherever lockmaster talks to "
                      "Temporal, which refuses to start without it)", markup=False,
                      soft_wrap=True)
        else:
            out.print(f"codec: payloads encrypted with key {keys.current[0]!r}; "
                      f"{len(keys.ids)} key(s) decrypt", markup=False)
    out.print(
        f"{file}: OK — {len(config.connections)} connection(s), {len(config.pipelines)} "
        f"pipeline(s), {len(config.projects)} project(s), {len(config.jobs)} job(s), "
        f"{len(config.nodes.providers)} node provider(s)"
        + (f", {signatures} known-failure signature(s)" if signatures else "")
    )


@app.command("apply")
def apply(file: Path = typer.Argument(..., help="lockmaster.yaml to apply")) -> None:
    """Validate FILE, then bring every running gate queue, node pool and TE broker to it:
    queues take the new projects, requirements, window and reporters (items in flight keep
    their job graphs; items of a removed project are dequeued with a report), pools and brokers
    their new specs. Nothing is started or terminated."""
    from lockmaster.starters.reconfigure import apply_config  # the client stack, when used

    try:
        config = load_config(file)
    except ConfigError as exc:
        err.print(str(exc), markup=False, soft_wrap=True)
        err.print("nothing was applied", markup=False)
        raise typer.Exit(EXIT_USAGE) from None
    result = with_client(config, lambda client: apply_config(client, config))
    for line in result.lines():
        out.print(line, markup=False)
    if not result.applied:
        fail("no running workflows to reconfigure (start the workers: lockmaster worker "
             "orchestrator, or lockmaster run)", 1)
    if result.failed:
        raise typer.Exit(1)
