"""Task queues, one per worker role: each role polls its own, where its side effects are."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    # Workflows, plus the control-plane activities (review reports, git merges).
    ORCHESTRATOR = "orchestrator"
    # Job execution on nodes.
    EXECUTOR = "executor"
    # Cloud calls for the node pools: launching, deleting, scanning for leaks.
    LAUNCHER = "launcher"
    # The publishing host: the stable repository, its signing key, the mirrors.
    PUBLISHER = "publisher"


def task_queue(prefix: str, role: Role) -> str:
    return f"{prefix}-{role.value}"
