"""`lockmaster hook HOOK ARGS...`: Gerrit's hooks, with Gerrit's own arguments.

Install: `ln -s $(which lockmaster) $GERRIT_SITE/hooks/patchset-created` (and the others).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer

from lockmaster.cli.context import fail, load, out
from lockmaster.starters.dispatch import dispatch_or_keep
from lockmaster.starters.hook_args import HOOK_OPTIONS, HookArgumentError, parse_hook
from lockmaster.starters.kept_events import kept_events

# Every hook parse_hook knows, so a hook added there also works as an argv[0] symlink.
HOOK_NAMES = tuple(HOOK_OPTIONS)


def hook(
    ctx: typer.Context,
    name: str = typer.Argument(..., help=f"the hook: {', '.join(HOOK_NAMES)}"),
    config: Path | None = typer.Option(None, "--lockmaster-config", help="lockmaster.yaml"),
    connection: str | None = typer.Option(
        None, "--lockmaster-connection", help="the Gerrit connection these hooks come from"
    ),
) -> None:
    """Turn a Gerrit hook invocation into workflow starts (the same as stream-events would)."""
    cfg = load(config)
    conn = connection or os.environ.get("LOCKMASTER_CONNECTION") or _only_gerrit(cfg)
    try:
        event = parse_hook(name, list(ctx.args), conn)
    except HookArgumentError as exc:
        fail(f"lockmaster hook {name}: {exc}")
    try:
        spool = kept_events(cfg.state_path, conn)
        done = asyncio.run(dispatch_or_keep(cfg, event, spool))
    except OSError as exc:  # the state directory cannot be written
        fail(f"could not deliver the {name} event, nor keep it: {exc} (the hook needs "
             f"state_dir, {cfg.state_path}, writable)", 1)
    if done.flushed:
        out.print(f"handed over {done.flushed} event(s) kept by earlier hooks")
    for action in done.actions:
        out.print(str(action))
    if done.kept is not None:
        fail(f"could not deliver the {name} event ({done.error}); kept in {done.kept}: it is "
             "delivered before the next hook's event, or by `lockmaster events flush "
             f"--connection {conn}`", 1)


def _only_gerrit(cfg) -> str:  # type: ignore[no-untyped-def]
    gerrits = [n for n, c in cfg.connections.items() if c.driver == "gerrit"]
    if len(gerrits) == 1:
        return gerrits[0]
    fail(
        "cannot tell which connection these hooks belong to: pass --lockmaster-connection NAME "
        f"or set LOCKMASTER_CONNECTION (gerrit connections: {', '.join(gerrits) or 'none'})"
    )
