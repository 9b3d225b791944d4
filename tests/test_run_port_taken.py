"""`lockmaster run` whose log server's port another process holds: it says so, and the dev
server and the workers run on without it (issue 15: it used to die with its dev server)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lockmaster.config.loader import EXAMPLES
from lockmaster.config.models import LockmasterConfig
from lockmaster.temporal.client import connect
from tests.ports import restartable_port

pytestmark = pytest.mark.slow


def test_a_taken_log_port_does_not_take_the_main_job_down(tmp_path: Path) -> None:
    config = yaml.safe_load((EXAMPLES / "dev.yaml").read_text())
    port, ui, logs = restartable_port(), restartable_port(), restartable_port()
    config["temporal"]["address"] = f"127.0.0.1:{port}"
    config["temporal"]["dev-server"].update({"port": port, "ui-port": ui})
    config["logs"] = {"url": f"http://127.0.0.1:{logs}", "serve": {"port": logs}}
    config["web"] = {"port": restartable_port()}  # the status page: not on a shared 9000
    config["state-dir"] = str(tmp_path / "state")
    config["packaging"]["cache"]["enabled"] = False
    config["publishing"]["mirrors"] = []
    file = tmp_path / "lockmaster.yaml"
    file.write_text(yaml.safe_dump(config))
    holder = socket.socket()  # another process of the deployment holds the log port
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", logs))
    holder.listen()
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    lockmaster = Path(sys.executable).parent / "lockmaster"
    process = subprocess.Popen([lockmaster, "run", "--config", str(file), "--no-demo"],
                               stdout=out.open("w"), stderr=err.open("w"),
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ready." not in out.read_text():
            assert process.poll() is None, out.read_text() + err.read_text()
            assert time.monotonic() < deadline, out.read_text() + err.read_text()
            time.sleep(0.2)
        assert "the log server did not start" in err.read_text()
        assert f"127.0.0.1:{logs}" in err.read_text()
        time.sleep(2)
        assert process.poll() is None, err.read_text()  # still running
        loaded = LockmasterConfig.model_validate(config)

        async def answers() -> bool:
            client = await connect(loaded)
            return await client.service_client.check_health()

        assert asyncio.run(answers())  # the dev server is up
    finally:
        holder.close()
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    assert "stopped" in out.read_text()
