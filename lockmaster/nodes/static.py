"""Static nodes: existing hosts reached over SSH (asyncssh), a few builds at a time each.

Slots (max-parallel-jobs per host) are counted in this process only: two workers sharing a host
each believe they own all of its slots. The node pool workflow replaces this accounting later.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import posixpath
import re
import shlex
import signal
import tarfile
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from lockmaster.config.models import StaticNode
from lockmaster.config.models import StaticProvider as StaticProviderConfig
from lockmaster.model.build import NodeInfo
from lockmaster.nodes.base import DownloadError, Node, NodeError, OutputSink, SkipSink
from lockmaster.nodes.local import OUTPUT_GRACE, READ_SIZE, TreeWriter, check_build_id

CONNECT_TIMEOUT = 15.0
KILL_TIMEOUT = 15.0
# Keepalives notice a host that vanished without closing the connection (~1 minute).
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT_MAX = 4
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_q = shlex.quote
# A download whose stream stalls this long has lost its node (keepalives usually say so first).
DOWNLOAD_STALL = 120.0
STDERR_KEEP = 16384  # of a download's error output, what is kept for the message
# After a tar stream's end, what may still come (tar pads to 10 KiB records) before we stop.
TRAILER_LIMIT = 1 << 20
_NOT_A_DIRECTORY = 65  # exit statuses of the download's remote script
_MISSING = 66


def known_hosts_for(node: StaticNode) -> asyncssh.SSHKnownHosts:
    """known_hosts holding only the configured key(s) for this host; everything else is refused."""
    pattern = node.host if node.port == 22 else f"[{node.host}]:{node.port}"
    lines = []
    for key in filter(None, (line.strip() for line in node.host_key.splitlines())):
        try:
            asyncssh.import_public_key(key)  # asyncssh would silently skip a bad key
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise NodeError(
                f"static node {node.name!r}: host-key is not a public key in known_hosts form "
                f"('ssh-ed25519 AAAA...'): {exc}"
            ) from exc
        lines.append(f"{pattern} {key}")
    if not lines:
        raise NodeError(f"static node {node.name!r}: host-key is empty")
    return asyncssh.import_known_hosts("\n".join(lines) + "\n")


async def connect(
    node: StaticNode, connect_timeout: float = CONNECT_TIMEOUT
) -> asyncssh.SSHClientConnection:
    """An SSH connection to `node`, host key checked; any failure is a NodeError saying why."""
    where = f"static node {node.name!r} ({node.username}@{node.host}:{node.port})"
    known_hosts = known_hosts_for(node)
    try:
        return await asyncssh.connect(
            node.host,
            node.port,
            username=node.username,
            client_keys=[str(node.key_file)],
            known_hosts=known_hosts,
            agent_path=None,  # only the configured key, never the worker's agent
            config=None,  # nor ~/.ssh/config
            connect_timeout=connect_timeout,
            keepalive_interval=KEEPALIVE_INTERVAL,
            keepalive_count_max=KEEPALIVE_COUNT_MAX,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise NodeError(
            f"{where}: host key does not match the configured host-key, refusing: {exc}"
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise NodeError(f"{where}: authentication with {node.key_file} refused: {exc}") from exc
    except (asyncssh.KeyImportError, FileNotFoundError) as exc:
        raise NodeError(f"{where}: cannot load client key {node.key_file}: {exc}") from exc
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise NodeError(f"{where}: unreachable: {exc or type(exc).__name__}") from exc


def _exit_status(process: asyncssh.SSHClientProcess[str]) -> int | None:
    if process.exit_status is not None and process.exit_status >= 0:
        return process.exit_status
    if process.exit_signal is not None:
        name = process.exit_signal[0]
        try:
            return 128 + signal.Signals[f"SIG{name}"]
        except KeyError:
            return 128
    return None


class SSHNode:
    """A workspace `<work_dir>/<build_id>` on a static host, over one SSH connection."""

    def __init__(
        self,
        info: NodeInfo,
        conn: asyncssh.SSHClientConnection,
        work_dir: str,
        build_id: str,
        output_grace: float = OUTPUT_GRACE,
    ) -> None:
        self.info = info
        self.conn = conn
        self.workspace = posixpath.join(work_dir, build_id)
        # Pid files of the commands run here, outside the workspace the job sees.
        self.control = posixpath.join(work_dir, ".lockmaster", build_id)
        self.output_grace = output_grace
        self._runs = 0

    def _lost(self, exc: BaseException) -> NodeError:
        return NodeError(f"connection to {self.info.name} ({self.info.host}) lost: {exc}")

    async def upload_workspace(self, local_dir: Path) -> str:
        # tar over the channel keeps everything (.git, modes, symlinks) in one round trip;
        # --no-same-owner: files must belong to the remote user, or git refuses the repos.
        remote = (
            f"rm -rf {_q(self.workspace)} && mkdir -p {_q(self.workspace)} {_q(self.control)}"
            f" && tar --no-same-owner -C {_q(self.workspace)} -xf -"
        )
        tar = await asyncio.create_subprocess_exec(
            "tar", "-C", str(local_dir), "-cf", "-", ".",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert tar.stdout is not None and tar.stderr is not None
        try:
            try:
                process = await self.conn.create_process(remote, encoding=None)
            except (OSError, asyncssh.Error) as exc:
                raise self._lost(exc) from exc
            try:
                while chunk := await tar.stdout.read(READ_SIZE):
                    process.stdin.write(chunk)
                    await process.stdin.drain()
                process.stdin.write_eof()
            except (OSError, asyncssh.Error):
                pass  # the remote end stopped reading: its exit status below says why
            completed = await process.wait()
        finally:
            if tar.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    tar.kill()
            local_errors = await tar.stderr.read()
            await tar.wait()
        if tar.returncode != 0:
            raise NodeError(f"tar of {local_dir} failed: {local_errors.decode(errors='replace')}")
        if completed.exit_status is None and completed.exit_signal is None:
            raise self._lost(RuntimeError("the channel closed during the upload"))
        if completed.exit_status != 0:
            stderr = completed.stderr or b""
            text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
            raise NodeError(
                f"unpacking the workspace on {self.info.name} failed "
                f"(exit {completed.exit_status}): {text.strip()}"
            )
        return self.workspace

    async def download(
        self, remote_dir: str, local_dir: Path, *, max_bytes: int, skipped: SkipSink | None = None
    ) -> int:
        """tar over the channel, like the upload: one round trip, and nothing needed on the host
        beyond what the upload already needs (SFTP may be disabled there). The stream is unpacked
        here, member by member, by TreeWriter: never trusted to stay inside `local_dir`, and cut
        off as soon as the announced sizes pass `max_bytes`."""
        where = f"{remote_dir} on {self.info.name}"
        d = _q(remote_dir)
        remote = (
            f"if [ -L {d} ] || {{ [ -e {d} ] && [ ! -d {d} ]; }}; then exit {_NOT_A_DIRECTORY}; "
            f"fi; [ -d {d} ] || exit {_MISSING}; exec tar -C {d} -cf - ."
        )
        try:
            process = await self.conn.create_process(remote, stdin=asyncssh.DEVNULL, encoding=None)
        except (OSError, asyncssh.Error) as exc:
            raise self._lost(exc) from exc
        writer = TreeWriter(local_dir, remote_dir, max_bytes, where, skipped)
        stream = _ChannelStream(process, asyncio.get_running_loop(), writer.stop, self._lost)
        errors = asyncio.ensure_future(_read_some(process.stderr, STDERR_KEEP))
        unpack = asyncio.ensure_future(asyncio.to_thread(_untar, stream, writer))
        try:
            try:
                written: int | None = await asyncio.shield(unpack)
                broken: Exception | None = None
            except asyncio.CancelledError:
                writer.stop.set()
                process.close()  # the stream ends: the unpacking thread stops
                await asyncio.wait({unpack})
                if not unpack.cancelled():
                    unpack.exception()  # retrieved: its error is expected
                raise
            except (DownloadError, NodeError):
                process.close()  # stop the remote tar: the rest is not wanted
                raise
            except Exception as exc:  # not a tar stream (also: none at all, the remote exited)
                written, broken = None, exc
            # The end of the stream (tar's padding), then the exit status says how it went.
            if not await _drained(process.stdout, TRAILER_LIMIT):
                process.close()
                raise DownloadError(f"{where}: the node sent more than a tar archive")
            status, stderr = await self._download_status(process, errors)
            if status == _MISSING:
                await asyncio.to_thread(writer.discard)
                await asyncio.to_thread(local_dir.mkdir, parents=True)
                return 0
            if status == _NOT_A_DIRECTORY:
                raise DownloadError(f"{where} is not a directory")
            # GNU tar: 1 means some file changed while it was read (it is there all the same).
            if status not in (0, 1):
                raise DownloadError(f"{where}: tar failed with status {status}: {stderr}")
            if broken is not None or written is None:
                raise DownloadError(f"{where}: the node sent a broken tar archive: {broken}")
            return written
        except BaseException:
            writer.discard()
            raise
        finally:
            process.close()
            errors.cancel()

    async def _download_status(
        self, process: asyncssh.SSHClientProcess[bytes], errors: asyncio.Future[bytes]
    ) -> tuple[int, str]:
        try:
            await asyncio.wait_for(process.wait_closed(), KILL_TIMEOUT)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise self._lost(exc) from exc
        status = _exit_status(process)
        if status is None:
            raise self._lost(RuntimeError("the channel closed without an exit status"))
        stderr = b""
        with contextlib.suppress(Exception):
            stderr = await asyncio.wait_for(asyncio.shield(errors), 1)
        return status, stderr.decode(errors="replace").strip()

    async def run(
        self,
        command: str,
        cwd: str,
        env: dict[str, str],
        output: OutputSink,
        timeout: float,
    ) -> int:
        for name in env:
            if not _ENV_NAME.match(name):
                raise ValueError(f"environment variable name {name!r} is not a shell identifier")
        self._runs += 1
        pidfile = posixpath.join(self.control, f"run-{self._runs}.pid")
        exports = "".join(f"export {name}={_q(value)}; " for name, value in env.items())
        # The command leads its own session and process group (setsid), and records the id so
        # a timeout or cancellation can kill everything it started. The login shell sshd starts
        # has read ~/.bashrc already; --norc keeps the nested bashes from reading it again
        # (bash does that for each level under sshd: slow, and killing one mid-way can leave
        # stale locks behind, e.g. pyenv's rehash lock).
        inner = (
            f"echo $$ > {_q(pidfile)}; cd {_q(cwd)} || exit 1; "
            f"{exports}exec bash --norc -c {_q(command)}"
        )
        remote = (
            f"mkdir -p {_q(self.control)} && "
            f"exec setsid -w bash --norc -c {_q(inner)} </dev/null 2>&1"
        )
        try:
            process = await self.conn.create_process(
                remote,
                stdin=asyncssh.DEVNULL,
                stderr=asyncssh.STDOUT,
                encoding="utf-8",
                errors="replace",
            )
        except (OSError, asyncssh.Error) as exc:
            raise self._lost(exc) from exc
        pump = asyncio.create_task(self._pump(process, output))
        try:
            async with asyncio.timeout(timeout):
                status = await self._finish(process, pump)
        except BaseException:
            # Timeout, cancellation, lost connection: nothing may keep running on the host.
            await _shielded(self._kill(pidfile))
            raise
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            process.close()
        return status

    async def _pump(self, process: asyncssh.SSHClientProcess[str], output: OutputSink) -> None:
        try:
            while chunk := await process.stdout.read(READ_SIZE):
                await output(chunk)
        except (OSError, asyncssh.Error) as exc:
            raise self._lost(exc) from exc

    async def _finish(
        self, process: asyncssh.SSHClientProcess[str], pump: asyncio.Task[None]
    ) -> int:
        """Wait for the output to end and the exit status; a process that left children
        holding its output is done once it exits (plus a grace period to drain output)."""
        while not pump.done():
            if _exit_status(process) is not None:
                await asyncio.wait({pump}, timeout=self.output_grace)
                break
            await asyncio.wait({pump}, timeout=0.1)
        if pump.done():
            pump.result()  # a lost connection surfaces here
        status = _exit_status(process)
        if status is None:
            try:
                await process.wait_closed()
            except (OSError, asyncssh.Error) as exc:
                raise self._lost(exc) from exc
            status = _exit_status(process)
        if status is None:
            raise self._lost(RuntimeError("the channel closed without an exit status"))
        return status

    async def _kill(self, pidfile: str) -> None:
        # The pid file may not be written yet if we come very early: wait for it a little.
        script = (
            f"i=0; while [ ! -s {_q(pidfile)} ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; "
            f"pg=$(cat {_q(pidfile)} 2>/dev/null) && "
            '{ kill -KILL -- "-$pg"; pkill -KILL -s "$pg"; } 2>/dev/null; true'
        )
        with contextlib.suppress(OSError, asyncssh.Error, TimeoutError):
            await asyncio.wait_for(self.conn.run(script, check=False), KILL_TIMEOUT)

    async def cleanup(self) -> None:
        script = (
            f'for f in {_q(self.control)}/*.pid; do [ -s "$f" ] && '
            '{ kill -KILL -- "-$(cat "$f")"; pkill -KILL -s "$(cat "$f")"; }; done 2>/dev/null; '
            f"rm -rf {_q(self.workspace)} {_q(self.control)}"
        )
        try:
            result = await asyncio.wait_for(self.conn.run(script, check=False), KILL_TIMEOUT)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise self._lost(exc) from exc
        if result.exit_status != 0:
            raise NodeError(f"cleanup on {self.info.name} failed: {result.stderr!s}".strip())

    async def close(self) -> None:
        self.conn.close()
        with contextlib.suppress(OSError, asyncssh.Error, TimeoutError):
            await asyncio.wait_for(self.conn.wait_closed(), 5)


async def _read_some(reader: asyncssh.SSHReader[bytes], keep: int) -> bytes:
    """Everything the stream sends (read it all, or the channel's window fills and stalls the
    other stream), keeping the first `keep` bytes."""
    kept = b""
    with contextlib.suppress(OSError, asyncssh.Error):
        while chunk := await reader.read(READ_SIZE):
            kept = (kept + chunk)[:keep]
    return kept


async def _drained(reader: asyncssh.SSHReader[bytes], limit: int) -> bool:
    """Read to the end of the stream; False if more than `limit` bytes come."""
    total = 0
    with contextlib.suppress(OSError, asyncssh.Error):
        while chunk := await reader.read(READ_SIZE):
            total += len(chunk)
            if total > limit:
                return False
    return True


class _ChannelStream:
    """A blocking `read` over an SSH process's stdout, for tarfile in a worker thread: each read
    waits for the event loop to deliver the next chunk."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes],
                 loop: asyncio.AbstractEventLoop, stop: threading.Event,
                 lost: Callable[[BaseException], NodeError]) -> None:
        self.process = process
        self.loop = loop
        self.stop = stop
        self.lost = lost

    def read(self, size: int = READ_SIZE) -> bytes:
        if self.stop.is_set():
            return b""
        future = asyncio.run_coroutine_threadsafe(
            self.process.stdout.read(max(1, min(size, READ_SIZE))), self.loop)
        try:
            return future.result(DOWNLOAD_STALL)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise self.lost(TimeoutError(f"no data for {DOWNLOAD_STALL:g} s")) from None
        except (OSError, asyncssh.Error) as exc:
            raise self.lost(exc) from exc


def _untar(stream: _ChannelStream, writer: TreeWriter) -> int:
    """Unpack a tar stream (in a worker thread) through `writer`; nothing is extracted by
    tarfile itself, which would trust the names and links."""
    with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
        for member in archive:
            path = writer.relative(member.name)
            if path is None:
                writer.skip(member.name, "a name leading outside the tree")
            elif member.isdir():
                writer.add_dir(path)
            elif member.isreg():
                source = archive.extractfile(member)
                assert source is not None
                writer.add_file(path, source, member.size)
            elif member.issym():
                writer.add_link(path, member.linkname)
            elif member.islnk():
                writer.add_hardlink(path, member.linkname)
            else:
                writer.skip(path, "not a regular file, directory or symbolic link")
    if writer.stop.is_set():
        raise DownloadError(f"download of {writer.where} cancelled")
    return writer.finish()


async def _shielded(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` to completion even if we are cancelled again meanwhile."""
    task = asyncio.ensure_future(coro)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(task)


@dataclass(eq=False)
class _Host:
    config: StaticNode
    in_use: int = 0

    @property
    def free(self) -> int:
        return self.config.max_parallel_jobs - self.in_use


class StaticProvider:
    """The hosts of a static provider; a build waits for a free slot on a host with its label."""

    def __init__(
        self, config: StaticProviderConfig, connect_timeout: float = CONNECT_TIMEOUT
    ) -> None:
        self.name = config.name
        self.connect_timeout = connect_timeout
        self._hosts = [_Host(node) for pool in config.pools for node in pool.nodes]
        self._changed = asyncio.Condition()
        self._held: dict[SSHNode, _Host] = {}

    @property
    def labels(self) -> set[str]:
        return {label for host in self._hosts for label in host.config.labels}

    def serves(self, label: str) -> bool:
        return label in self.labels

    async def acquire(self, label: str, build_id: str) -> Node:
        check_build_id(build_id)
        candidates = [host for host in self._hosts if label in host.config.labels]
        if not candidates:
            raise NodeError(f"static provider {self.name!r} has no host with label {label!r}")
        host = await self._take_slot(candidates)
        try:
            conn = await connect(host.config, self.connect_timeout)
        except BaseException:
            await self._give_back(host)
            raise
        info = NodeInfo(
            provider=self.name, name=host.config.name, label=label, host=host.config.host
        )
        node = SSHNode(info, conn, host.config.work_dir, build_id)
        self._held[node] = host
        return node

    async def release(self, node: Node) -> None:
        host = self._held.pop(node, None) if isinstance(node, SSHNode) else None
        if host is None:
            return  # released already
        assert isinstance(node, SSHNode)
        try:
            await node.close()
        finally:
            await self._give_back(host)

    async def _take_slot(self, candidates: list[_Host]) -> _Host:
        async with self._changed:
            while True:
                free = [host for host in candidates if host.free > 0]
                if free:
                    host = max(free, key=lambda h: h.free)  # spread builds over the hosts
                    host.in_use += 1
                    return host
                await self._changed.wait()

    async def _give_back(self, host: _Host) -> None:
        async with self._changed:
            host.in_use -= 1
            self._changed.notify_all()
