"""How the executor gets a speculative state into a directory (implemented with git)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from lockmaster.model.state import SpeculativeState


class WorkspaceError(Exception):
    """The state could not be reproduced (e.g. a merge gave a different commit)."""


class WorkspacePreparer(Protocol):
    async def prepare(self, state: SpeculativeState, dest: Path, projects: list[str]) -> None:
        """Check out every project of `state` (plus `projects` at their branch tip) under
        `dest/src/<project>`, each at the state's head for it."""
        ...
