"""`lockmaster web`: serves until interrupted, says where; Temporal down is 503 with the server
up; a taken port or a bad one is a clear error and a non-zero exit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from tests.ports import free_port

LOCKMASTER = Path(sys.executable).parent / "lockmaster"


def config_file(tmp_path: Path) -> Path:
    file = tmp_path / "lockmaster.yaml"
    file.write_text(yaml.safe_dump({
        "state-dir": str(tmp_path / "state"),
        "temporal": {"address": f"127.0.0.1:{free_port()}"},  # nothing listens there
        "connections": {"local": {"driver": "local"}},
        "results": {"enabled": False},
    }))
    return file


def test_serves_and_says_temporal_is_down(tmp_path: Path) -> None:
    file = config_file(tmp_path)
    port = free_port()
    out = tmp_path / "out.txt"
    process = subprocess.Popen([LOCKMASTER, "web", "--config", str(file), "--port", str(port)],
                               stdout=out.open("w"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while f"status page on http://127.0.0.1:{port}" not in out.read_text():
            assert process.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=30)
            raise AssertionError("expected 503")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            body = json.loads(exc.read())
            assert "is not reachable" in body["error"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200
        assert process.poll() is None  # still serving
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
    assert process.returncode == 0
    assert "stopped" in out.read_text()


def test_a_taken_port_and_a_bad_port_are_refused(tmp_path: Path) -> None:
    file = config_file(tmp_path)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        taken = subprocess.run([LOCKMASTER, "web", "--config", str(file), "--port", str(port)],
                               capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert taken.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in taken.stderr and "--port" in taken.stderr
    bad = subprocess.run([LOCKMASTER, "web", "--config", str(file), "--port", "70000"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "is not a port" in bad.stderr
