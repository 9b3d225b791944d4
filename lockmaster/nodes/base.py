"""The node provider interface. The node pool (a later capability) serves the same interface."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from lockmaster.model.build import NodeInfo

# Called with each chunk of output as it arrives (already decoded, may hold several lines).
OutputSink = Callable[[str], Awaitable[None]]


class NodeError(Exception):
    """The node could not be had or stopped answering: an infrastructure failure."""


class CommandResult(Protocol):
    exit_status: int


class Node(Protocol):
    info: NodeInfo

    async def upload_workspace(self, local_dir: Path) -> str:
        """Copy a prepared workspace directory to the node; returns its path on the node."""
        ...

    async def run(
        self, command: str, cwd: str, env: dict[str, str], output: OutputSink, timeout: float
    ) -> int:
        """Run a shell command; returns its exit status. Raises TimeoutError past `timeout`
        (the command is killed) and NodeError when the node is lost."""
        ...

    async def cleanup(self) -> None:
        """Remove the workspace; called once, whatever happened."""
        ...


class NodeProvider(Protocol):
    name: str

    def serves(self, label: str) -> bool: ...

    async def acquire(self, label: str, build_id: str) -> Node:
        """A node with `label`, held for this build until released. Raises NodeError."""
        ...

    async def release(self, node: Node) -> None: ...
