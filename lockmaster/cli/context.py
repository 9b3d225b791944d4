"""Shared by the commands: finding and loading the configuration, clear errors, exit codes."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lockmaster.config.loader import ConfigError, default_config_path, load_config
from lockmaster.config.models import LockmasterConfig

if TYPE_CHECKING:
    from temporalio.client import Client

# soft_wrap: long URLs stay on one line, so they can be copied. emoji off: "file.yaml:100:"
# is a position, not an emoji code.
PIPED_WIDTH = 4096
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
# Piped into a file or grep, output is not cut at 80 columns: the IDs users copy from it
# (nodes, requests, TEs, log URLs) come out whole. For scripts, every listing has --json.
out = Console(highlight=False, soft_wrap=True, emoji=False,
              width=None if sys.stdout.isatty() else PIPED_WIDTH)


def listing_table(*columns: str) -> Table:
    """A listing whose cells wrap rather than end in "…" on a narrow terminal: an ID is
    whole, if on two lines."""
    listing = Table()
    for column in columns:
        listing.add_column(column, overflow="fold")
    return listing

EXIT_USAGE = 2  # bad input: nothing was started or changed

# Every operator command names who acts and may say why (model/audit.py): recorded with what
# it did, shown in listings, status and reports.
UserOpt = typer.Option(None, "--user", help="who acts (default: $LOCKMASTER_USER, else your "
                                            "login name); recorded with the action")
ReasonOpt = typer.Option(None, "--reason", help="why; recorded with who did it")


def acting(user: str | None) -> str:
    """The operator running this command (`--user`, $LOCKMASTER_USER, the login name)."""
    from lockmaster.model.audit import actor

    return actor(user)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    # The message is plain text: a path or a value with [brackets] is printed as it is.
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    raise SystemExit(code)


def config_path(option: Path | None) -> tuple[Path, bool]:
    """The config to use, and whether it is the embedded default (dev.yaml)."""
    if option is not None:
        return option, False
    if env := os.environ.get("LOCKMASTER_CONFIG"):
        return Path(env), False
    if Path("lockmaster.yaml").exists():
        return Path("lockmaster.yaml"), False
    return default_config_path(), True


def load(option: Path | None, state_dir: Path | None = None) -> LockmasterConfig:
    path, embedded = config_path(option)
    try:
        config = load_config(path)
    except ConfigError as exc:
        err.print(str(exc), soft_wrap=True, markup=False)
        raise SystemExit(EXIT_USAGE) from None
    override = state_dir or (Path(v) if (v := os.environ.get("LOCKMASTER_STATE_DIR")) else None)
    if override is not None:
        config.state_dir = override.resolve()
    elif embedded:
        # The embedded defaults keep their state beside where lockmaster is run from.
        config.state_dir = Path.cwd() / "state"
    return config


def is_tty() -> bool:
    return sys.stdout.isatty()


T = TypeVar("T")


def with_client(cfg: LockmasterConfig, action: Callable[[Client], Awaitable[T]],
                *refusals: type[Exception]) -> T:
    """Run `action` with a Temporal client; Temporal unreachable exits 1, a refusal (one of
    `refusals`: the operator's request cannot be carried out) exits 2 with its message."""
    # the client stack loads only when used
    from lockmaster.temporal.client import TemporalConfigError, connect

    async def main() -> T:
        try:
            client = await connect(cfg)
        except TemporalConfigError as exc:  # certificates, the codec's keys: the config's fault
            fail(str(exc))
        except RuntimeError as exc:
            fail(f"cannot reach Temporal at {cfg.temporal.address}: {exc}", 1)
        return await action(client)

    try:
        return asyncio.run(main())
    except refusals as exc:
        fail(str(exc))
