"""Prepared roots kept ready on this machine (seed 003: environments "prepared ahead of time and
kept ready for immediate use", refreshed "on a daily basis").

An executor that runs local nodes builds packages on this machine: it prepares the target
distribution's build and install roots (`pkgtool prepare-root`, the same options the jobs get)
when it starts and again every half max-age, so no build pays for bootstrapping and none finds a
root older than max-age. A failure is reported and retried at the next round; it never stops the
worker (a build then prepares the root itself). Single-use cloud nodes get theirs from their
image, or prepare one on their first build.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
from pathlib import Path

from lockmaster.config.models import LockmasterConfig
from lockmaster.packaging.steps import distribution_args

log = logging.getLogger(__name__)
PKGTOOL = Path(__file__).with_name("pkgtool.py")
# After a failure (mirror or cache down), try again sooner than a whole round.
RETRY_AFTER = 300.0


def wanted(config: LockmasterConfig) -> bool:
    """Roots are kept here when jobs build on this machine, with a distribution, as root."""
    local = any(p.driver == "local" for p in config.nodes.providers)
    return local and config.packaging.target() is not None and os.geteuid() == 0


def prepare_command(config: LockmasterConfig) -> list[str]:
    return [sys.executable, str(PKGTOOL), "prepare-root",
            *shlex.split(distribution_args(config))]


async def prepare_once(config: LockmasterConfig) -> tuple[bool, str]:
    proc = await asyncio.create_subprocess_exec(
        *prepare_command(config), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    return proc.returncode == 0, text


async def keep_roots_ready(config: LockmasterConfig, stop: asyncio.Event) -> None:
    """Until `stop`: prepare (or confirm) the roots, then wait half max-age and again."""
    interval = config.packaging.roots.max_age / 2
    while not stop.is_set():
        ok, text = await prepare_once(config)
        lines = [line for line in text.splitlines() if line.startswith(("buildd:", "minbase:"))]
        if ok:
            for line in lines:
                log.info("package roots ready: %s", line)
        else:
            tail = "\n".join(text.splitlines()[-5:])
            log.warning("package roots could not be prepared (builds will try themselves; "
                        "retrying in %.0f s):\n%s", RETRY_AFTER, tail)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval if ok else RETRY_AFTER)
        except TimeoutError:
            pass
