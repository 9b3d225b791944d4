"""Key paths and line numbers for validation errors: the config loader's, re-exported for the
scenario loader."""

from __future__ import annotations

from typing import Any

import yaml

from lockmaster.config.loader import (
    ConfigProblem,
    clean_loc,
    format_path,
    line_of,
    problems_from_validation,
)

Loc = tuple[Any, ...]
clean_config_loc = clean_loc

__all__ = ["Loc", "clean_config_loc", "format_path", "line_of", "problem",
           "problems_from_validation"]


def problem(root: yaml.Node | None, loc: Loc, message: str) -> ConfigProblem:
    return ConfigProblem(format_path(loc), line_of(root, loc), message)
