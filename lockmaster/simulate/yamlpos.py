"""Key paths and line numbers for validation errors, shared with the config loader.

The walk along the composed YAML tree is `lockmaster.config.loader`'s; it is private there today.
Once the loader exposes it (`line_of`, `format_path`, and `problems_from_validation`, which
`parse_config` would then use too), the fallbacks below go and this module only re-exports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from pydantic import ValidationError

from lockmaster.config import loader as _loader
from lockmaster.config.loader import ConfigProblem
from lockmaster.config.models import ReferenceError_

Loc = tuple[Any, ...]

line_of: Callable[[yaml.Node | None, Loc], int | None] = getattr(
    _loader, "line_of", _loader._line_of
)
format_path: Callable[[Loc], str] = getattr(_loader, "format_path", _loader._format_path)
clean_config_loc: Callable[[Loc], Loc] = getattr(_loader, "clean_loc", _loader._clean_loc)


def problem(root: yaml.Node | None, loc: Loc, message: str) -> ConfigProblem:
    return ConfigProblem(format_path(loc), line_of(root, loc), message)


def problems_from_validation(
    exc: ValidationError,
    root: yaml.Node | None,
    *,
    prefix: Loc = (),
    clean: Callable[[Loc], Loc] = clean_config_loc,
    messages: Callable[[dict[str, Any]], str | None] = lambda err: None,
) -> list[ConfigProblem]:
    """One problem per pydantic error: key path and line under `prefix` (where in the file the
    validated data sits), with the loader's wording; `messages` may reword an error."""
    out = []
    for err in exc.errors():
        loc = clean(tuple(err["loc"]))
        message = messages(err) or err["msg"]
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, ReferenceError_):
            loc = error.loc
            message = str(error)
        elif err["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; keys are kebab-case)"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        out.append(problem(root, (*prefix, *loc), message))
    return out
