"""Local nodes (development only): each build gets a directory, commands run as subprocesses.

There is no isolation beyond the directory and a clean environment: never use this provider for
untrusted changes.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import shutil
import signal
from pathlib import Path

from lockmaster.config.models import LocalPool
from lockmaster.config.models import LocalProvider as LocalProviderConfig
from lockmaster.model.build import NodeInfo
from lockmaster.nodes.base import Node, NodeError, OutputSink

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READ_SIZE = 65536
# After the command exits, how long to keep reading output still held open by processes it
# left in the background before giving up on them (they no longer delay the result).
OUTPUT_GRACE = 2.0


def check_build_id(build_id: str) -> str:
    """Build ids name directories: one plain path component only."""
    if not build_id or build_id in (".", "..") or "/" in build_id or "\0" in build_id:
        raise NodeError(f"build id {build_id!r} cannot name a workspace directory")
    return build_id


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def exit_status(returncode: int) -> int:
    """A shell's spelling of a status: killed by signal N is 128+N."""
    return 128 - returncode if returncode < 0 else returncode


async def _pump(reader: asyncio.StreamReader, output: OutputSink) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := await reader.read(READ_SIZE):
        if text := decoder.decode(chunk):
            await output(text)
    if tail := decoder.decode(b"", final=True):
        await output(tail)


async def _open_reader(read_fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_SIZE * 4)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
    )
    return reader, transport


class LocalNode:
    """A workspace directory on this machine."""

    def __init__(self, info: NodeInfo, workspace: Path, output_grace: float = OUTPUT_GRACE):
        self.info = info
        self.workspace = workspace
        self.output_grace = output_grace
        self._groups: set[int] = set()  # process groups started here, killed at cleanup

    async def upload_workspace(self, local_dir: Path) -> str:
        # The node is this machine: move the prepared tree in (a rename on one filesystem).
        await asyncio.to_thread(_move_contents, local_dir, self.workspace)
        return str(self.workspace)

    async def run(
        self,
        command: str,
        cwd: str,
        env: dict[str, str],
        output: OutputSink,
        timeout: float,
    ) -> int:
        if not await asyncio.to_thread(os.path.isdir, cwd):
            await output(f"lockmaster: working directory {cwd} does not exist\n")
            return 1
        full_env = {
            "PATH": os.environ.get("PATH", DEFAULT_PATH),
            "HOME": str(self.workspace),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            **env,
        }
        # Our own pipe rather than asyncio's: asyncio's wait() also waits for the pipe to close,
        # which a backgrounded child holding stdout would delay forever.
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                "bash",
                "-c",
                command,
                cwd=cwd,
                env=full_env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                start_new_session=True,  # its own process group (pgid == pid) to kill whole
            )
        except OSError as exc:
            os.close(read_fd)
            raise NodeError(f"cannot start bash on the local node: {exc}") from exc
        finally:
            os.close(write_fd)
        self._groups.add(proc.pid)
        reader, transport = await _open_reader(read_fd)
        pump = asyncio.create_task(_pump(reader, output))
        try:
            async with asyncio.timeout(timeout):
                returncode = await proc.wait()
                await asyncio.wait({pump}, timeout=self.output_grace)
        except BaseException:
            # Timeout, cancellation or a failing sink: the command must not outlive us.
            _kill_group(proc.pid)
            await proc.wait()
            raise
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            transport.close()  # a sink failure surfaced from `await pump` above
        return exit_status(returncode)

    async def cleanup(self) -> None:
        for pgid in self._groups:
            _kill_group(pgid)  # whatever the job left running in the background
        self._groups.clear()
        await asyncio.to_thread(shutil.rmtree, self.workspace, ignore_errors=True)


def _move_contents(source: Path, dest: Path) -> None:
    if source.resolve() == dest.resolve():
        return
    dest.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        shutil.move(str(entry), str(dest / entry.name))


class LocalProvider:
    """Workspaces under `<root>/<build_id>`, at most `max-servers` at a time per pool."""

    def __init__(self, config: LocalProviderConfig, root: Path) -> None:
        self.name = config.name
        self.root = root
        self._pools: list[tuple[LocalPool, asyncio.Semaphore]] = [
            (pool, asyncio.Semaphore(pool.max_servers)) for pool in config.pools
        ]
        self._held: dict[LocalNode, asyncio.Semaphore] = {}  # node -> the slot it holds

    @property
    def labels(self) -> set[str]:
        return {label for pool, _ in self._pools for label in pool.labels}

    def serves(self, label: str) -> bool:
        return label in self.labels

    async def acquire(self, label: str, build_id: str) -> Node:
        check_build_id(build_id)
        found = next(((p, s) for p, s in self._pools if label in p.labels), None)
        if found is None:
            raise NodeError(f"local provider {self.name!r} has no pool with label {label!r}")
        pool, slots = found
        await slots.acquire()  # waiting for a slot is fine: builds queue here
        workspace = self.root / build_id
        try:
            await asyncio.to_thread(_fresh_dir, workspace)
        except OSError as exc:
            slots.release()
            raise NodeError(f"cannot create workspace {workspace}: {exc}") from exc
        info = NodeInfo(
            provider=self.name,
            name=f"{self.name}-{pool.name}-{build_id}",
            label=label,
            host="localhost",
        )
        node = LocalNode(info, workspace)
        self._held[node] = slots
        return node

    async def release(self, node: Node) -> None:
        slots = self._held.pop(node, None) if isinstance(node, LocalNode) else None
        if slots is not None:  # releasing twice is harmless
            slots.release()


def _fresh_dir(path: Path) -> None:
    # A retried build reuses its id: whatever an earlier attempt left is stale.
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
