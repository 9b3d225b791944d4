"""Readable, deterministic workflow IDs: the same event always names the same workflow."""

from __future__ import annotations

from lockmaster.model.change import ChangeRef


def check_id(change: ChangeRef, pipeline: str = "check", prefix: str = "") -> str:
    return f"{prefix}{pipeline}/{change.project}/{change.number}/{change.patchset}"


def gate_id(queue: str, prefix: str = "") -> str:
    """One queue workflow per shared queue (named by the projects' `queue`, else the project)."""
    return f"{prefix}gate/{queue}"
