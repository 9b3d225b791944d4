"""pkgtool's shared basics: errors, running and echoing commands, small helpers.

Standard library only: uploaded with pkgtool.py to build nodes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

PROG = "pkgtool.py"
MANIFEST_VERSION = 1

# Which distribution package provides a tool (for "not installed" messages).
TOOL_PACKAGES = {
    "dpkg-buildpackage": "dpkg-dev",
    "dpkg-checkbuilddeps": "dpkg-dev",
    "dpkg-deb": "dpkg",
    "dpkg": "dpkg",
    "dpkg-query": "dpkg",
    "apt-get": "apt",
    "rpmbuild": "rpm (Debian) / rpm-build (Fedora)",
    "rpmspec": "rpm (Debian) / rpm-build (Fedora)",
    "rpm": "rpm",
    "lintian": "lintian",
    "rpmlint": "rpmlint",
    "reprepro": "reprepro",
    "createrepo_c": "createrepo-c (Debian) / createrepo_c (Fedora)",
    "dnf": "dnf",
    "chroot": "coreutils",
    "unshare": "util-linux",
    "ldd": "libc-bin (Debian) / glibc-common (Fedora)",
    "git": "git",
}


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class UsageError(Exception):
    """Bad usage or input: exit 2."""


class StepFailed(Exception):
    """The step failed for a reason in the package: exit 1."""


# --------------------------------------------------------------------------------------------
# Running commands: everything is echoed with its output.


@dataclass
class Result:
    cmd: list[str]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def lines(self) -> list[str]:
        return self.output.splitlines()


def say(message: str, log: TextIO | None = None) -> None:
    print(message, flush=True)
    if log is not None:
        log.write(message + "\n")
        log.flush()


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        hints = ", ".join(f"{t} (package {TOOL_PACKAGES.get(t, t)})" for t in missing)
        raise UsageError(f"required tools are not installed on this node: {hints}")


def run(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log: TextIO | None = None,
    timeout: float | None = None,
) -> Result:
    """Run `cmd`, echoing it and streaming its combined output to stdout (and `log`)."""
    cmd = [str(c) for c in cmd]
    say("+ " + shlex.join(cmd) + (f"    (in {cwd})" if cwd else ""), log)
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=timeout is not None,
        )
    except FileNotFoundError as exc:
        raise UsageError(
            f"cannot run {cmd[0]!r}: not installed on this node "
            f"(package {TOOL_PACKAGES.get(cmd[0], cmd[0])})"
        ) from exc
    timed_out = threading.Event()
    timer: threading.Timer | None = None
    if timeout is not None:

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
    captured: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        captured.append(line)
        say(line, log)
    rc = proc.wait()
    if timer is not None:
        timer.cancel()
    if timed_out.is_set():
        say(f"(killed after {timeout:g} s)", log)
        rc = 124
    if rc != 0:
        say(f"(exit status {rc})", log)
    return Result(cmd, rc, "\n".join(captured))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def interesting(output: str, patterns: Iterable[str], limit: int = 6) -> list[str]:
    """The lines of `output` that explain a failure (for the one-line failure messages)."""
    regex = re.compile("|".join(patterns))
    found = [line.strip() for line in output.splitlines() if regex.search(line)]
    return found[:limit]


def host_deb_arch() -> str:
    if shutil.which("dpkg"):
        proc = subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=False
        )
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "i386"}.get(machine, machine)



def fetch(url: str) -> bytes:
    if url.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).read_bytes()
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def parse_deb822(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
        elif not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas
