"""`lockmaster config check`: the configured signatures directory, every file in it. A bad
signature fails the check (the executors would leave it out with a warning at run time)."""

from __future__ import annotations

from pathlib import Path

import yaml

from lockmaster.config.loader import ConfigError, ConfigProblem, line_of
from lockmaster.config.models import LockmasterConfig
from lockmaster.config.signatures import signatures_directory
from lockmaster.signatures.format import load_directory

KEY = ("signatures", "directory")


def check_signatures(config: LockmasterConfig, file: Path | str | None = None) -> int:
    """The number of good signatures; ConfigError naming each bad file's problems (with its
    own line) at the config's `signatures.directory` (with the config's line)."""
    if not config.signatures.enabled:
        return 0
    directory, explicit = signatures_directory(config)
    file = file or config.source or "<configuration>"
    problems: list[ConfigProblem] = []
    if not directory.is_dir():
        if not explicit:
            return 0  # the default directory: none is fine
        problems.append(ConfigProblem("signatures.directory", None,
                                      f"{directory} is not a directory; create it, or fix "
                                      "the path (relative to this file)"))
    else:
        signatures, errors = load_directory(directory)
        for error in errors:
            for problem in error.problems:
                where = f"{error.file}:{problem.line}" if problem.line else error.file
                what = f"{problem.path}: " if problem.path else ""
                problems.append(ConfigProblem("signatures.directory", None,
                                              f"{where}: {what}{problem.message}"))
        if not problems:
            return len(signatures)
    root = None
    try:
        root = yaml.compose(Path(file).read_text())
    except (OSError, yaml.YAMLError):
        pass
    line = line_of(root, KEY) if explicit else None
    for problem in problems:
        problem.line = line
    raise ConfigError(file, problems)
