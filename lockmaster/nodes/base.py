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


class DownloadError(Exception):
    """A tree could not be downloaded as asked (too large, unreadable on the node, not a
    directory): the job's doing, not the node's. Nothing of it is left in the local directory."""


# Told about each entry a download leaves out on purpose: (path in the tree, why).
SkipSink = Callable[[str, str], None]


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

    async def download(
        self, remote_dir: str, local_dir: Path, *, max_bytes: int, skipped: SkipSink | None = None
    ) -> int:
        """Copy the directory tree `remote_dir` on the node into `local_dir` (created; must not
        exist yet); returns the bytes of file content written. A missing `remote_dir` gives an
        empty `local_dir`.

        Only regular files and directories are written: symbolic links become copies of what
        they point to when that is inside the tree (links to a directory containing the link
        are left out, as loops), and are left out when they point outside it or nowhere;
        devices, sockets and fifos are left out. Each left-out entry is told to `skipped`.

        Raises DownloadError when the content would exceed `max_bytes` (checked before it is
        written: a job must not fill the log storage) or the tree cannot be read, and NodeError
        when the node is lost; either way `local_dir` is removed again."""
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
        holder: str = "", arrived: float | None = None,
    ) -> Nodeset:
        """All the nodes or none; raises NodeError when they cannot be had. `arrived` (epoch
        seconds): when the build first asked, for a retried build keeping its place in the
        queue (sources without a queue ignore it)."""
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
