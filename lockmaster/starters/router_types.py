"""What routing an event did, for the caller to print or check."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RouteAction:
    action: str  # started, duplicate, already-running, cancelled, ignored
    workflow_id: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        where = f" {self.workflow_id}" if self.workflow_id else ""
        return f"{self.action}{where}{': ' + self.detail if self.detail else ''}"
