"""What every part of `lockmaster.yaml` shares: kebab-case keys, unknown keys refused, and
cross-reference errors that know where in the file they are."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_snake


def _kebab(name: str) -> str:
    return to_snake(name).replace("_", "-")


class ConfigModel(BaseModel):
    model_config = ConfigDict(alias_generator=_kebab, populate_by_name=True, extra="forbid")


class ReferenceError_(ValueError):  # not the builtin ReferenceError
    """A cross-reference error that knows where in the file it is (for line numbers)."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def check_unique(where: tuple[str | int, ...], names: list[str]) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise ReferenceError_(
                (*where, index), f"{'.'.join(map(str, where))}: {name!r} is defined twice"
            )
        seen.add(name)
