"""`lockmaster te-shell`: the SSH forced command of a TE's current lease key.

sshd runs it (as the restricted account) instead of whatever the holder asked for; the request is
in SSH_ORIGINAL_COMMAND. It allows only its own TE's whitelisted commands (see `commands`), for
the generation written into the key's line, and only while that generation is the TE's current
lease (the lease file). Every command, allowed or refused, is logged as one line.

Allowed commands are carried out by the TE host worker's agent over a Unix socket, not here:
this process has no libvirt rights (and with the test driver it could not see the worker's
in-memory TEs anyway). `copy-seed-image` streams stdin (as TripleO's `dd` over ssh did) to the
agent, which writes it into the seed's disk.

Entry points: `main(argv, env, stdin, stdout, stderr) -> int` (testable), `run()` (process exit),
and `python -m lockmaster.testenv.shell ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, NoReturn, TextIO

from pydantic import ValidationError

from lockmaster.testenv.access import LeaseFile
from lockmaster.testenv.commands import (
    AgentReply,
    AgentRequest,
    CommandRefused,
    ShellCommand,
    Verb,
    parse_command,
)

CHUNK = 1 << 20
CONNECT_TIMEOUT = 10.0
REPLY_TIMEOUT = 3600.0  # a seed image upload may take a while


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # never print usage to the holder and exit
        raise _ArgError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lockmaster te-shell", add_help=False)
    parser.add_argument("--te", required=True)
    parser.add_argument("--generation", required=True, type=int)
    parser.add_argument("--state-file", required=True, type=Path)
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--log", type=Path)
    return parser


class _Shell:
    def __init__(self, args: argparse.Namespace, stderr: TextIO) -> None:
        self.args = args
        self.stderr = stderr
        self.te = args.te  # "host/name" once the lease file is read

    def log(self, status: str, command: str, reason: str | None = None) -> None:
        if self.args.log is None:
            return
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        line = (
            f"{stamp} te={self.te} generation={self.args.generation} {status} "
            f"command={json.dumps(command)}"  # JSON-quoted: a command cannot forge log lines
        )
        if reason:
            line += f" reason={json.dumps(reason)}"
        try:
            with self.args.log.open("a") as handle:
                handle.write(line + "\n")
        except OSError as exc:
            self.stderr.write(f"te-shell: cannot write log {self.args.log}: {exc}\n")

    def refuse(self, command: str, reason: str) -> int:
        self.log("refused", command, reason)
        self.stderr.write(f"te-shell: refused: {reason}\n")
        return 1

    def load_lease(self) -> LeaseFile | None:
        try:
            return LeaseFile.model_validate_json(self.args.state_file.read_text())
        except (OSError, ValidationError):
            return None


def main(
    argv: Sequence[str],
    env: Mapping[str, str],
    stdin: BinaryIO,
    stdout: TextIO,
    stderr: TextIO,
) -> int:
    """Run one holder command; 0 if done, 1 if refused or failed, 2 on a bad forced command."""
    try:
        args = _parser().parse_args(list(argv))
    except _ArgError as exc:
        stderr.write(f"te-shell: bad forced command (an operator must fix it): {exc}\n")
        return 2
    shell = _Shell(args, stderr)
    text = env.get("SSH_ORIGINAL_COMMAND", "")
    lease = shell.load_lease()
    if lease is not None and lease.te.name == args.te:
        shell.te = lease.te.key
    if not text.strip():
        return shell.refuse(text, "no interactive login; give one of the allowed commands")
    if lease is None or lease.te.name != args.te:
        return shell.refuse(text, f"lease ended: no lease of TE {args.te} on this host")
    if not lease.is_current(args.generation):
        return shell.refuse(text, f"lease ended: generation {args.generation} is not current")
    try:
        command = parse_command(lease.te, text)
    except CommandRefused as exc:
        return shell.refuse(text, str(exc))
    shell.log("accepted", text)
    try:
        reply = _ask_agent(args, text, command, stdin)
    except (OSError, ValueError) as exc:  # ValueError: a reply that is not ours
        reason = f"TE host agent unreachable at {args.socket}: {exc}"
        shell.log("failed", text, reason)
        stderr.write(f"te-shell: {reason}\n")
        return 1
    stdout.write(reply.output)
    stdout.flush()
    if not reply.ok:
        shell.log("failed", text, reply.error)
        stderr.write(f"te-shell: {reply.error}\n")
        return 1
    return 0


def _ask_agent(
    args: argparse.Namespace, text: str, command: ShellCommand, stdin: BinaryIO
) -> AgentReply:
    request = AgentRequest(te=args.te, generation=args.generation, command=text)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(str(args.socket))
        sock.settimeout(REPLY_TIMEOUT)
        sock.sendall(request.model_dump_json().encode() + b"\n")
        try:
            if command.verb is Verb.COPY_SEED_IMAGE:
                while chunk := stdin.read(CHUNK):
                    sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)  # end of request (and of the image)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent stopped reading (it refused the upload): its reply says why
        with sock.makefile("rb") as replies:
            line = replies.readline()
    if not line:
        return AgentReply(ok=False, error="the TE host agent closed the connection")
    return AgentReply.model_validate_json(line)


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """Process entry point: `lockmaster te-shell ...` calls `run(sys.argv[2:])`."""
    sys.exit(
        main(
            sys.argv[1:] if argv is None else argv,
            os.environ,
            sys.stdin.buffer,
            sys.stdout,
            sys.stderr,
        )
    )


if __name__ == "__main__":
    run()
