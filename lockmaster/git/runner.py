"""Run git as a subprocess, in an environment that no user or hook setting can change."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

IDENTITY_NAME = "lockmaster"
IDENTITY_EMAIL = "lockmaster@localhost"

# What git may legitimately take from the caller: finding programs and reaching servers.
# Everything else is dropped, notably GIT_DIR/GIT_INDEX_FILE/... that Gerrit hooks export and
# that would silently point every command at another repository.
_PASSTHROUGH = (
    "PATH", "HOME", "TMPDIR", "SSH_AUTH_SOCK", "GIT_SSH", "GIT_SSH_COMMAND",
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO",
)

# Settings every command sees, whatever the machine's git defaults (GIT_CONFIG_COUNT: git 2.31+).
_CONFIG = {
    "init.defaultBranch": "master",
    "advice.detachedHead": "false",
    "core.autocrlf": "false",
    # ~/.config/git/attributes would otherwise still apply (merge=union changes merge results).
    "core.attributesFile": "/dev/null",
    "core.hooksPath": "/dev/null",
    "commit.gpgSign": "false",
    "merge.conflictStyle": "merge",
    # An automatic gc must finish inside the repository lock, not in a detached child.
    "gc.autoDetach": "false",
    "maintenance.auto": "false",
}


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: str
    stderr: str


class GitError(Exception):
    """A git command failed; the message carries git's own words (stderr, else stdout)."""

    def __init__(self, message: str, *, returncode: int | None = None,
                 stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The fixed environment for git, with `extra` on top (e.g. commit dates)."""
    env = {k: os.environ[k] for k in _PASSTHROUGH if k in os.environ}
    env.update(
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
        LANG="C",
        TZ="UTC",
        GIT_AUTHOR_NAME=IDENTITY_NAME,
        GIT_AUTHOR_EMAIL=IDENTITY_EMAIL,
        GIT_COMMITTER_NAME=IDENTITY_NAME,
        GIT_COMMITTER_EMAIL=IDENTITY_EMAIL,
        GIT_CONFIG_COUNT=str(len(_CONFIG)),
    )
    for i, (key, value) in enumerate(_CONFIG.items()):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    env.update(extra or {})
    return env


async def run_git(*args: str, cwd: Path | str, env: Mapping[str, str] | None = None,
                  stdin: str | None = None) -> GitResult:
    """Run `git args...` in `cwd`; never raises for a non-zero exit (see `git`)."""
    proc = await asyncio.create_subprocess_exec(
        "git", *args,
        cwd=str(cwd),
        env=git_env(env),
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate(None if stdin is None else stdin.encode())
    except asyncio.CancelledError:
        # A cancelled activity must not leave git writing into a repository behind our back.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    assert proc.returncode is not None
    return GitResult(
        proc.returncode,
        out.decode("utf-8", errors="replace"),
        err.decode("utf-8", errors="replace"),
    )


async def git(*args: str, cwd: Path | str, env: Mapping[str, str] | None = None,
              check: bool = True) -> str:
    """Run git and return its stdout; with `check`, a non-zero exit raises GitError."""
    result = await run_git(*args, cwd=cwd, env=env)
    if check and result.returncode != 0:
        words = result.stderr.strip() or result.stdout.strip() or "(no output)"
        raise GitError(
            f"git {' '.join(args)} failed in {cwd} (exit {result.returncode}): {words}",
            returncode=result.returncode, stdout=result.stdout, stderr=result.stderr,
        )
    return result.stdout


async def git_stdin(*args: str, cwd: Path | str, stdin: str) -> str:
    """`git args...` fed `stdin` (e.g. `update-ref --stdin`); raises GitError like `git`."""
    result = await run_git(*args, cwd=cwd, stdin=stdin)
    if result.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {cwd} (exit {result.returncode}): "
                       f"{result.stderr.strip()}", returncode=result.returncode,
                       stdout=result.stdout, stderr=result.stderr)
    return result.stdout


class GitCoprocess:
    """One long-running `git args...` that answers each line of input with a line of output
    (e.g. `hash-object --stdin-paths`): many requests, one process. An async context manager;
    leaving it closes git's input and waits for git (killing it on an error or cancellation)."""

    def __init__(self, *args: str, cwd: Path | str, env: Mapping[str, str] | None = None) -> None:
        self.args = args
        self.cwd = cwd
        # GIT_FLUSH: answer each line at once, whatever git guesses about its output.
        self.env = {**(env or {}), "GIT_FLUSH": "1"}
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> GitCoprocess:
        self._proc = await asyncio.create_subprocess_exec(
            "git", *self.args, cwd=str(self.cwd), env=git_env(self.env),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def ask(self, line: str) -> str:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(line.encode() + b"\n")
            await proc.stdin.drain()
            answer = await proc.stdout.readline()
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        if not answer.endswith(b"\n"):
            await self._stop()
            raise GitError(f"git {' '.join(self.args)} failed in {self.cwd} "
                           f"(exit {proc.returncode}): {await self._stderr()}",
                           returncode=proc.returncode)
        return answer.decode("utf-8", errors="replace").rstrip("\n")

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        if exc_type is not None:
            await self._stop()
            return
        proc.stdin.close()
        try:
            await proc.wait()
        except asyncio.CancelledError:
            await self._stop()
            raise
        if proc.returncode != 0:
            raise GitError(f"git {' '.join(self.args)} failed in {self.cwd} "
                           f"(exit {proc.returncode}): {await self._stderr()}",
                           returncode=proc.returncode)

    async def _stop(self) -> None:
        proc = self._proc
        assert proc is not None
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    async def _stderr(self) -> str:
        assert self._proc is not None and self._proc.stderr is not None
        return (await self._proc.stderr.read()).decode("utf-8", errors="replace").strip()
