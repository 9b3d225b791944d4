"""What the log store settings need beyond their shape (logs.store, driver http): a readable,
non-empty token file, and a spool apart from the served logs root. Checked by `lockmaster
config check` and by the processes that use them (an executor, `lockmaster logs serve`) before
they start, each problem with its key path and line: what, where, how to fix.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lockmaster.config.loader import ConfigError, ConfigProblem, format_path, line_of
from lockmaster.config.models import LockmasterConfig
from lockmaster.logserver import TokenError, read_token

TOKEN_FILE = ("logs", "store", "token-file")


def log_store_problems(config: LockmasterConfig) -> list[tuple[tuple[str, ...], str]]:
    store = config.logs.store
    if store.driver != "http" or store.token_file is None:
        return []
    problems: list[tuple[tuple[str, ...], str]] = []
    try:
        read_token(config.resolve(store.token_file))
    except TokenError as exc:
        problems.append((TOKEN_FILE, str(exc)))
    spool, root = config.logs_spool.resolve(), config.logs_root.resolve()
    if spool.is_relative_to(root) or root.is_relative_to(spool):
        problems.append((
            ("logs", "store", "spool") if store.spool else ("logs", "root"),
            f"the executor's spool {spool} and the logs root {root} overlap: builds are "
            "removed from the spool once delivered, which would remove them from the store; "
            "set logs.store.spool (default <state-dir>/logs-spool) or logs.root apart"))
    return problems


def check_log_store(config: LockmasterConfig, file: Path | str | None = None,
                    ignore: tuple[tuple[str, ...], ...] = ()) -> None:
    """ConfigError (with the lines in `file`, default the config's own) when a problem (other
    than at the key paths in `ignore`)."""
    problems = [p for p in log_store_problems(config) if p[0] not in ignore]
    if not problems:
        return
    file = file or config.source or "<configuration>"
    root = None
    try:
        root = yaml.compose(Path(file).read_text())
    except (OSError, yaml.YAMLError):
        pass
    raise ConfigError(file, [ConfigProblem(format_path(loc), line_of(root, loc), message)
                             for loc, message in problems])
