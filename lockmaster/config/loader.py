"""Load `lockmaster.yaml`: YAML with line numbers, validated by the config models.

Every error names the file, the key path and the line, and says what is expected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lockmaster.config.models import LockmasterConfig, ReferenceError_


@dataclass
class ConfigProblem:
    path: str  # key path, e.g. "projects[0].pipelines.check.jobs[1].dependencies"
    line: int | None
    message: str


class ConfigError(Exception):
    """A configuration that cannot be used; `str()` is the message for the user."""

    def __init__(self, file: Path | str, problems: list[ConfigProblem]) -> None:
        self.file = str(file)
        self.problems = problems
        super().__init__(self.render())

    what = "configuration"  # what the file is, in the first line of the message

    def render(self) -> str:
        lines = [f"{self.file}: invalid {self.what} ({len(self.problems)} problem(s))"]
        for p in self.problems:
            # file:line: as compilers say it (editors jump there); the line only once.
            where = f"{self.file}:{p.line}" if p.line else f"{self.file} (top level)"
            lines.append(f"  {where}: {p.path or '(file)'}: {p.message}")
        return "\n".join(lines)


def format_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Walk the composed YAML tree along `loc`; the line of the deepest node found (1-based)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    line = key.start_mark.line + 1
                    node = value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # Discriminated unions and str|model unions add the tag name to the location: drop it.
    tags = {"local", "gerrit", "static", "openstack", "ProjectJob", "str", "list[str]"}
    return tuple(p for p in loc if not (isinstance(p, str) and (p in tags or "[" in p)))


def problems_from_validation(
    exc: ValidationError,
    root: yaml.Node | None,
    *,
    prefix: tuple[Any, ...] = (),
    clean: Callable[[tuple[Any, ...]], tuple[Any, ...]] = clean_loc,
    messages: Callable[[dict[str, Any]], str | None] = lambda err: None,
) -> list[ConfigProblem]:
    """One problem per pydantic error, with its key path and line. `prefix` says where in the
    file the validated data sits; `messages` may reword an error (e.g. for another schema)."""
    problems = []
    for err in exc.errors():
        loc = clean(tuple(err["loc"]))
        message = messages(dict(err)) or err["msg"]
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, ReferenceError_):
            loc = error.loc
            message = str(error)
        elif err["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; keys are kebab-case)"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        full = (*prefix, *loc)
        problems.append(ConfigProblem(format_path(full), line_of(root, full), message))
    return problems


def read_mapping(
    text: str, file: Path | str, error: type[ConfigError], expected: str
) -> tuple[yaml.Node | None, dict[str, Any]]:
    """Parse YAML keeping line numbers: (composed tree, data). Not YAML, or not a mapping:
    `error` naming the file and the line (`expected` says what the top level should be)."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(file, [ConfigProblem("", line, f"not valid YAML: {problem}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(file, [ConfigProblem("", 1, expected)])
    return root, data


def parse_config(text: str, file: Path | str = "<string>") -> LockmasterConfig:
    root, data = read_mapping(text, file, ConfigError,
                              "the file must be a mapping of keys (state-dir, ...)")
    try:
        config = LockmasterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(file, problems_from_validation(exc, root)) from None
    config.source = Path(file).resolve() if file != "<string>" else None
    return config


def load_config(path: Path | str) -> LockmasterConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            path, [ConfigProblem("", None, "file not found; pass the path of lockmaster.yaml")]
        ) from None
    except OSError as exc:
        raise ConfigError(path, [ConfigProblem("", None, f"cannot read: {exc.strerror}")]) from None
    return parse_config(text, path)


EXAMPLES = Path(__file__).parent / "examples"


def default_config_path() -> Path:
    """The embedded defaults used by the main job: `config/examples/dev.yaml`."""
    return EXAMPLES / "dev.yaml"
