"""`signatures:` in lockmaster.yaml: where the known-failure signatures are (docs/signatures.md).

The directory holds one YAML file per known bug (lockmaster/signatures/format.py). It is read by
the executors (they match every build's logs right after the build, so it must be present on
every executor host: it is versioned in the deployment's repository and checked out there) and
by `lockmaster signatures check|test`. Relative to the config file; default `signatures` beside
it. A missing default directory means "no signatures"; a directory set here that does not exist
is an error of `lockmaster config check`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from lockmaster.config.base import ConfigModel

if TYPE_CHECKING:
    from lockmaster.config.models import LockmasterConfig

DEFAULT_DIRECTORY = Path("signatures")
# Per log file: what is read of a larger one is its first and last halves of this (failures
# show at the end of a job's output, infrastructure trouble at its start).
DEFAULT_MAX_BYTES = 4 * 2**20


class SignaturesConfig(ConfigModel):
    directory: Path | None = None  # None: <config dir>/signatures, if it exists
    enabled: bool = True  # off: executors match nothing (reports name no known failures)
    max_bytes_per_file: int = Field(default=DEFAULT_MAX_BYTES, ge=1024, le=2**30)


def signatures_directory(config: LockmasterConfig) -> tuple[Path, bool]:
    """(the directory, whether the configuration names it explicitly)."""
    directory = config.signatures.directory
    if directory is None:
        return config.resolve(DEFAULT_DIRECTORY), False
    return config.resolve(directory), True
