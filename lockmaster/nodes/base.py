"""How builds get nodes: a `NodeSource` hands out whole nodesets (the node pool workflows in a
deployment, `NodeProviders` directly in tests and tools); each node runs commands."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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


@dataclass
class Nodeset:
    """The nodes a build holds, in nodeset order; `origin` is the source's own bookkeeping."""

    request_id: str
    nodes: list[Node] = field(default_factory=list)
    origin: Any = None


class NodeSource(Protocol):
    async def acquire_nodeset(
        self, labels: list[str], request_id: str, *, precedence: int = 1, position: int = 0,
        holder: str = "",
    ) -> Nodeset:
        """All the nodes or none; raises NodeError when they cannot be had."""
        ...

    async def release_nodeset(self, nodeset: Nodeset, *, hold_until: float | None = None,
                              hold_reason: str | None = None) -> None:
        """Give them back (cloud nodes are deleted), or keep them until `hold_until`."""
        ...

    async def autohold_until(self, nodeset: Nodeset, project: str, job: str, change: int
                             ) -> tuple[float, str] | None:
        """For a failed build: (until, reason) when an operator asked to keep its nodes (only
        single-use cloud nodes are kept; slots go back to work)."""
        ...
