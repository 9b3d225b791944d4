"""The commands a TE's holder may run on its TE host, and the one place they are parsed.

Both the forced command (`shell`) and the worker's `agent` parse with `parse_command`, so a
command the shell let through is checked again, against the same rules, where it is carried out.
"""

from __future__ import annotations

import shlex
from enum import StrEnum

from lockmaster.model.base import Model
from lockmaster.model.testenv import TESpec

USAGE = (
    "allowed commands: list | start DOMAIN | destroy DOMAIN | "
    "copy-seed-image (image on stdin) | purge-disks"
)


class Verb(StrEnum):
    LIST = "list"
    START = "start"
    DESTROY = "destroy"
    COPY_SEED_IMAGE = "copy-seed-image"
    PURGE_DISKS = "purge-disks"


TAKES_DOMAIN = {Verb.START, Verb.DESTROY}


class CommandRefused(Exception):
    """Not a command this TE's holder may run (the message says why)."""


class ShellCommand(Model):
    verb: Verb
    domain: str | None = None


def parse_command(spec: TESpec, text: str) -> ShellCommand:
    """`text` as sent by the holder (SSH_ORIGINAL_COMMAND) -> a whitelisted command for `spec`."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise CommandRefused(f"cannot parse command: {exc}") from exc
    if not words:
        raise CommandRefused(f"no command given; {USAGE}")
    try:
        verb = Verb(words[0])
    except ValueError:
        raise CommandRefused(f"command {words[0]!r} is not allowed; {USAGE}") from None
    args = words[1:]
    if verb in TAKES_DOMAIN:
        if len(args) != 1:
            raise CommandRefused(f"{verb} takes exactly one DOMAIN")
        if args[0] not in spec.domains():
            raise CommandRefused(
                f"domain {args[0]!r} is not part of TE {spec.key} "
                f"(its domains: {', '.join(spec.domains())})"
            )
        return ShellCommand(verb=verb, domain=args[0])
    if args:
        raise CommandRefused(f"{verb} takes no arguments")
    return ShellCommand(verb=verb)


# --- the shell <-> agent protocol over the worker's Unix socket ----------------------------
# One JSON line each way; for copy-seed-image the image bytes follow the request line until the
# shell closes its sending side.


class AgentRequest(Model):
    te: str  # the TE's name on this host
    generation: int
    command: str  # the holder's command text, parsed again by the agent


class AgentReply(Model):
    ok: bool
    output: str = ""
    error: str | None = None
