"""The chaos harness's processes: the Temporal dev server (SQLite, restartable on its port) and
one OS process per lockmaster role (workers and `lockmaster gerrit listen`), each killable with
SIGKILL and restarted at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LOCKMASTER = Path(sys.executable).parent / "lockmaster"


def descendants(root: int) -> list[int]:
    """Every process whose parent chain leads to `root` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@dataclass
class Role:
    name: str  # orchestrator, executor, ..., te-host:tehost1, listener
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    kills: int = 0
    starts: int = 0
    down_since: float | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            out.write(f"\n=== start {time.strftime('%H:%M:%S')} ===\n".encode())
            out.flush()
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)
        self.starts += 1
        self.down_since = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> int:
        """SIGKILL the role's process and every process under it, in whatever session (local
        nodes run jobs in sessions of their own), as a host dying would. Returns how many
        processes under it died with it."""
        if self.process is None:
            return 0
        under = descendants(self.process.pid) if self.process.poll() is None else []
        for pid in [self.process.pid, *under]:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.process.wait()
        self.kills += 1
        self.down_since = time.time()
        return len(under)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


@dataclass
class Roles:
    roles: dict[str, Role] = field(default_factory=dict)

    def add(self, name: str, args: list[str], config: Path, logs: Path) -> Role:
        role = Role(name, [str(LOCKMASTER), *args, "--config", str(config)],
                    logs / f"{name.replace(':', '-')}.log")
        self.roles[name] = role
        return role

    def start_all(self) -> None:
        for role in self.roles.values():
            role.start()

    def stop_all(self) -> None:
        for role in self.roles.values():
            role.stop()

    def restart_dead(self) -> list[str]:
        """Restart roles that died on their own (not killed by the harness): returns them."""
        died = []
        for role in self.roles.values():
            if role.process is not None and role.process.poll() is not None \
                    and role.down_since is None:
                died.append(f"{role.name} (exit {role.process.returncode})")
                role.start()
        return died

    @property
    def kills(self) -> int:
        return sum(r.kills for r in self.roles.values())
