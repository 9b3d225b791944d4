"""The TE host worker's agent: carries out holders' commands that `te-shell` forwards.

It listens on a Unix socket (`TEAccess.socket`) inside the worker process, which owns the
libvirt connections (see `libvirt_host` on why one process must). Every request is checked again
here: the lease file must still name the request's generation as current, and the command must
parse against the TE's own spec. Commands for one TE run one at a time, under the same lock as
its reset: once a reset has revoked the lease and taken the lock, no holder command runs on that
TE any more, and an image upload in progress notices the revocation and stops.

Who may connect is decided by the socket's permissions (`socket_mode`, `socket_group`): the
restricted account (through te-shell) and root, nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import stat
import time
from pathlib import Path
from types import TracebackType

from pydantic import ValidationError

from lockmaster.model.testenv import TESpec
from lockmaster.testenv.access import TEAccess
from lockmaster.testenv.commands import (
    AgentReply,
    AgentRequest,
    CommandRefused,
    ShellCommand,
    Verb,
    parse_command,
)
from lockmaster.testenv.libvirt_host import LibvirtHost, TEHostError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
REQUEST_TIMEOUT = 30.0
LEASE_CHECK_EVERY = 0.5  # seconds between lease checks during an upload


class TELocks:
    """One asyncio lock per TE name, shared by the agent and the reset activity."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def __call__(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())


class ShellAgent:
    def __init__(
        self,
        libvirt: LibvirtHost,
        access: TEAccess,
        locks: TELocks,
        *,
        socket_mode: int = 0o660,
        socket_group: str | None = None,
    ) -> None:
        self.libvirt = libvirt
        self.access = access
        self.locks = locks
        self.socket_mode = socket_mode
        self.socket_group = socket_group
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        path = self.access.socket
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_socket(path)
        self._server = await asyncio.start_unix_server(self._handle, path=str(path))
        os.chmod(path, self.socket_mode)
        if self.socket_group is not None:
            os.chown(path, -1, grp.getgrnam(self.socket_group).gr_gid)
        log.info("TE shell agent listening on %s", path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            self.access.socket.unlink(missing_ok=True)

    async def __aenter__(self) -> ShellAgent:
        await self.start()
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            request = AgentRequest.model_validate_json(line)
        except (TimeoutError, ValueError, ValidationError) as exc:
            reply = AgentReply(ok=False, error=f"bad request to the TE host agent: {exc}")
        else:
            try:
                reply = await self.execute(request, reader)
            except Exception as exc:  # the holder gets an answer, the worker keeps running
                log.exception("TE shell agent: %s failed", request)
                reply = AgentReply(ok=False, error=f"internal error: {exc}")
        with contextlib.suppress(ConnectionError):
            writer.write(reply.model_dump_json().encode() + b"\n")
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def execute(self, request: AgentRequest, reader: asyncio.StreamReader) -> AgentReply:
        lease = self.access.lease(request.te)
        if lease is None or not lease.is_current(request.generation):
            return _ended(request)
        try:
            command = parse_command(lease.te, request.command)
        except CommandRefused as exc:
            return AgentReply(ok=False, error=f"refused: {exc}")
        async with self.locks(request.te):
            # Checked again: a reset may have revoked the lease while we waited for the lock.
            if not self.access.is_current(request.te, request.generation):
                return _ended(request)
            log.info("TE %s generation %d: %s", lease.te.key, request.generation, request.command)
            try:
                output = await self._run(lease.te, request, command, reader)
            except TEHostError as exc:
                return AgentReply(ok=False, error=str(exc))
        return AgentReply(ok=True, output=output)

    async def _run(
        self,
        spec: TESpec,
        request: AgentRequest,
        command: ShellCommand,
        reader: asyncio.StreamReader,
    ) -> str:
        host = self.libvirt
        if command.verb is Verb.LIST:
            states = await asyncio.to_thread(host.domain_states, spec)
            return "".join(f"{name} {state}\n" for name, state in states.items())
        if command.verb is Verb.START:
            assert command.domain is not None
            started = await asyncio.to_thread(host.start_domain, spec, command.domain)
            return f"{command.domain} {'started' if started else 'was already running'}\n"
        if command.verb is Verb.DESTROY:
            assert command.domain is not None
            destroyed = await asyncio.to_thread(host.destroy_domain, spec, command.domain)
            return f"{command.domain} {'destroyed' if destroyed else 'was not running'}\n"
        if command.verb is Verb.PURGE_DISKS:
            restored = await asyncio.to_thread(host.restore_disks, spec)
            return "".join(f"restored {volume}\n" for volume in restored)
        size = await self._upload(spec, request, reader)
        return f"copied {size} bytes into the disk of {spec.seed.name}\n"

    async def _upload(
        self, spec: TESpec, request: AgentRequest, reader: asyncio.StreamReader
    ) -> int:
        upload = await asyncio.to_thread(self.libvirt.open_seed_upload, spec)
        total = 0
        checked = time.monotonic()
        try:
            while True:
                # Bounded waits: a holder that stops sending cannot hold the TE's lock (and so
                # its reset) once its lease has ended.
                try:
                    chunk: bytes | None = await asyncio.wait_for(
                        reader.read(CHUNK), LEASE_CHECK_EVERY
                    )
                except TimeoutError:
                    chunk = None
                if time.monotonic() - checked >= LEASE_CHECK_EVERY:
                    if not self.access.is_current(request.te, request.generation):
                        raise TEHostError("lease ended during the upload; image discarded")
                    checked = time.monotonic()
                if chunk is None:
                    continue
                if not chunk:
                    break
                await asyncio.to_thread(upload.write, chunk)
                total += len(chunk)
            if total == 0:
                raise TEHostError("no image on stdin; nothing copied")
            await asyncio.to_thread(upload.finish)
        except BaseException:
            upload.abort()
            raise
        return total


def _ended(request: AgentRequest) -> AgentReply:
    return AgentReply(
        ok=False, error=f"lease ended: generation {request.generation} is not current"
    )


def _remove_stale_socket(path: Path) -> None:
    # A socket left by a worker that died; anything else at that path is not ours to remove.
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
