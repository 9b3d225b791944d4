"""Local nodes (development only): each build gets a directory, commands run as subprocesses.

There is no isolation beyond the directory and a clean environment: never use this provider for
untrusted changes.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import posixpath
import shutil
import signal
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lockmaster.config.models import LocalPool
from lockmaster.config.models import LocalProvider as LocalProviderConfig
from lockmaster.model.build import NodeInfo
from lockmaster.nodes.base import DownloadError, Node, NodeError, OutputSink, SkipSink

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READ_SIZE = 65536
# After the command exits, how long to keep reading output still held open by processes it
# left in the background before giving up on them (they no longer delay the result).
OUTPUT_GRACE = 2.0
MAX_LINK_HOPS = 40  # as Linux: more symbolic links than this while resolving one path is a loop
COPY_CHUNK = 1 << 20


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

    async def download(
        self, remote_dir: str, local_dir: Path, *, max_bytes: int, skipped: SkipSink | None = None
    ) -> int:
        where = f"{remote_dir} on {self.info.name}"
        writer = TreeWriter(local_dir, remote_dir, max_bytes, where, skipped)
        copy = asyncio.ensure_future(asyncio.to_thread(_copy_tree, Path(remote_dir), writer))
        try:
            return await asyncio.shield(copy)
        except asyncio.CancelledError:
            writer.stop.set()  # the copy notices between chunks and removes what it wrote
            await asyncio.wait({copy})
            if not copy.cancelled():
                copy.exception()  # retrieved: its "cancelled" error is expected
            raise

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


@contextlib.contextmanager
def _reading(writer: TreeWriter, path: str) -> Iterator[None]:
    """Reading the node's tree failed: the tree's problem (DownloadError). Failures writing
    the local copy stay OSErrors: they are ours."""
    try:
        yield
    except OSError as exc:
        raise DownloadError(
            f"{writer.where}: cannot read {path or '.'}: {exc.strerror or exc}"
        ) from exc


def _copy_tree(source: Path, writer: TreeWriter) -> int:
    try:
        with _reading(writer, ""):
            try:
                top: os.stat_result | None = source.lstat()
            except FileNotFoundError:
                top = None
        if top is None:
            return writer.finish()  # an empty tree
        if not stat.S_ISDIR(top.st_mode):
            raise DownloadError(f"{writer.where} is not a directory")
        pending = [""]
        while pending:
            rel = pending.pop()
            with _reading(writer, rel), os.scandir(source / rel) as entries:
                found = sorted(entries, key=lambda entry: entry.name)
            for entry in found:
                path = posixpath.join(rel, entry.name) if rel else entry.name
                with _reading(writer, path):
                    mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    writer.add_dir(path)
                    pending.append(path)
                elif stat.S_ISLNK(mode):
                    with _reading(writer, path):
                        target = os.readlink(entry.path)
                    writer.add_link(path, target)
                elif stat.S_ISREG(mode):
                    # O_NOFOLLOW: a file swapped for a link meanwhile is refused, not followed.
                    with _reading(writer, path):
                        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
                    with os.fdopen(fd, "rb") as source_file:
                        writer.add_file(path, source_file, os.fstat(fd).st_size)
                else:
                    writer.skip(path, "not a regular file, directory or symbolic link")
        return writer.finish()
    except BaseException:
        writer.discard()
        raise


def size_text(count: int) -> str:
    if count < 1 << 20:
        return f"{count} bytes"
    return f"{count / (1 << 20):.4g} MiB"


class TreeWriter:
    """Writes a tree read from a node (walked here, or streamed as tar from an SSH node) into
    `dest`, within a byte budget: only directories and regular files are written (never a
    symbolic link: whatever serves `dest` must not be led outside it). Symbolic links are
    recorded and, at `finish`, resolved against the tree as it was on the node: one leading to
    a file or directory inside the tree becomes a copy of it; one leading outside, nowhere, or to
    a directory containing it (a loop) is left out. Not thread-safe: one thread writes.
    """

    def __init__(self, dest: Path, root: str, max_bytes: int, where: str,
                 skipped: SkipSink | None = None) -> None:
        self.dest = dest
        self.root = posixpath.normpath(root)  # the tree's path on the node: absolute links
        self.max_bytes = max_bytes
        self.where = where  # for messages: "<dir> on <node>"
        self.skipped = skipped
        self.written = 0
        self.stop = threading.Event()  # set from another thread: give up at the next chunk
        self._kinds: dict[str, str] = {"": "dir"}  # path in the tree -> dir, file or link
        self._links: dict[str, str] = {}  # path -> the link's target as read
        self._started = False

    @staticmethod
    def relative(name: str) -> str | None:
        """A member name as a path inside the tree ("" is its top); None if it would leave."""
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if name.startswith("/") or ".." in parts:
            return None
        return "/".join(parts)

    def _start(self) -> None:
        if not self._started:
            self.dest.mkdir(parents=True)
            self._started = True

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise DownloadError(f"download of {self.where} cancelled")

    def _reserve(self, size: int) -> None:
        if self.written + size > self.max_bytes:
            raise DownloadError(
                f"{self.where} holds more than {size_text(self.max_bytes)}, the limit"
            )

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for index in range(1, len(parts) + 1):
            self._directory("/".join(parts[:index]))

    def _directory(self, path: str) -> None:
        kind = self._kinds.get(path)
        if kind == "dir":
            return
        if kind is not None:
            raise DownloadError(f"{self.where}: {path} is both a directory and a {kind}")
        (self.dest / path).mkdir()
        self._kinds[path] = "dir"

    def _claim(self, path: str, kind: str) -> None:
        if not path:
            raise DownloadError(f"{self.where}: the top of the tree cannot be a {kind}")
        self._start()
        self._check_stop()
        self._parents(path)
        if self._kinds.get(path, kind) != kind:
            raise DownloadError(f"{self.where}: {path} is both a {self._kinds[path]} and a {kind}")
        self._kinds[path] = kind

    def add_dir(self, path: str) -> None:
        self._start()
        self._check_stop()
        self._parents(path)
        self._directory(path)

    def add_file(self, path: str, source: BinaryIO, size: int) -> None:
        """`size`: what the source announces; checked against the budget before writing."""
        self._reserve(size)
        self._claim(path, "file")
        self._write(path, source)

    def add_link(self, path: str, target: str) -> None:
        self._claim(path, "link")
        self._links[path] = target

    def add_hardlink(self, path: str, target: str) -> None:
        """A second name of a file already in the tree (how tar sends hard links)."""
        inside = self.relative(target)
        if inside is None or self._kinds.get(inside) != "file":
            self.skip(path, "a hard link to a file not in the tree")
            return
        self._reserve((self.dest / inside).stat().st_size)
        self._claim(path, "file")
        with (self.dest / inside).open("rb") as source:
            self._write(path, source)

    def skip(self, path: str, why: str) -> None:
        if self.skipped is not None:
            self.skipped(path, why)

    def _write(self, path: str, source: BinaryIO) -> None:
        with (self.dest / path).open("wb") as out:
            while True:
                with _reading(self, path):
                    chunk = source.read(COPY_CHUNK)
                if not chunk:
                    break
                self._check_stop()
                self.written += len(chunk)
                if self.written > self.max_bytes:  # grew past what it announced
                    self._reserve(0)
                out.write(chunk)

    def finish(self) -> int:
        """Resolve the links (files first, so that copied directories hold them), return the
        bytes written."""
        self._start()
        resolved = {path: self.resolve(path) for path in sorted(self._links)}
        for want in ("file", "dir"):
            for path, found in resolved.items():
                if found is None:
                    if want == "file":
                        self.skip(path, "a symbolic link leading outside the tree or nowhere")
                    continue
                target, kind = found
                if kind != want:
                    continue
                if kind == "file":
                    self._reserve((self.dest / target).stat().st_size)
                    with (self.dest / target).open("rb") as source:
                        self._write(path, source)
                elif not target or path.startswith(f"{target}/"):
                    self.skip(path, "a symbolic link to a directory containing it (a loop)")
                else:
                    self._copy_dir(target, path)
        return self.written

    def _copy_dir(self, source: str, dest: str) -> None:
        (self.dest / dest).mkdir()
        for top, dirs, files in os.walk(self.dest / source):
            relative = Path(top).relative_to(self.dest / source)
            for name in sorted(dirs):
                (self.dest / dest / relative / name).mkdir()
            for name in sorted(files):
                # Only what this writer wrote is here: directories and regular files.
                file = Path(top) / name
                self._reserve(file.stat().st_size)
                with file.open("rb") as source_file:
                    self._write(f"{dest}/{relative}/{name}", source_file)

    def _target(self, target: str) -> tuple[bool, list[str]] | None:
        """A link's target as (absolute, parts inside the tree); None if it leads outside."""
        if not target.startswith("/"):
            return False, target.split("/")
        target = posixpath.normpath(target)
        if target == self.root:
            return True, []
        if target.startswith(f"{self.root}/"):
            return True, target[len(self.root) + 1:].split("/")
        return None  # absolute, elsewhere on the node

    def resolve(self, link: str) -> tuple[str, str] | None:
        """Where the link at `link` leads, resolved as the node's kernel would but within the
        recorded tree: (path, dir or file), or None (outside, nowhere, or a chain too long)."""
        start = self._target(self._links[link])
        if start is None:
            return None
        absolute, parts = start
        done = [] if absolute else link.split("/")[:-1]
        todo = list(reversed(parts))  # a stack: the next component last
        hops = 1
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    return None  # above the top of the tree
                done.pop()
                continue
            path = "/".join([*done, part])
            kind = self._kinds.get(path)
            if kind == "link":
                hops += 1
                following = self._target(self._links[path])
                if hops > MAX_LINK_HOPS or following is None:
                    return None
                absolute, parts = following
                if absolute:
                    done = []
                todo.extend(reversed(parts))
            elif kind == "dir":
                done.append(part)
            elif kind == "file" and not todo:
                done.append(part)
            else:
                return None  # missing, or a file used as a directory
        path = "/".join(done)
        return path, self._kinds[path]

    def discard(self) -> None:
        """Remove everything written (after a failure: nothing partial is kept)."""
        if self._started:
            shutil.rmtree(self.dest, ignore_errors=True)


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
