"""The TE-host role: runs on a TE host (`lockmaster worker te-host --host NAME`), polls that
host's own task queue and talks to libvirt locally; it also serves the agent that carries out
the holders' restricted commands (sshd's forced command forwards them to it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from lockmaster.activities.te_host import TEHostActivities
from lockmaster.config.models import LockmasterConfig
from lockmaster.leases.specs import te_specs
from lockmaster.testenv.access import TEAccess
from lockmaster.testenv.libvirt_host import LibvirtHost
from lockmaster.workflows.testenv import te_host_queue


def te_access_dir(config: LockmasterConfig) -> str:
    access = config.testenvs.access_dir
    return str(config.resolve(access) if access else config.state_path / "te-access")


@contextlib.asynccontextmanager
async def te_host_worker(client: Client, config: LockmasterConfig, host: str
                         ) -> AsyncIterator[Worker]:
    """The worker for `host`, its TEs prepared (checked, or created on test:// URIs)."""
    names = [h.name for h in config.testenvs.hosts]
    if host not in names:
        raise ValueError(f"no TE host {host!r} in the configuration (hosts: "
                         f"{', '.join(names) or 'none'})")
    directory = Path(te_access_dir(config))
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    activities = TEHostActivities(LibvirtHost(image_dir=directory / "images"),
                                  TEAccess.in_directory(directory))
    async with activities.agent:
        for spec in (s for specs in te_specs(config).values() for s in specs if s.host == host):
            await activities.prepare(spec)
        async with Worker(client, task_queue=te_host_queue(config.temporal.task_queue_prefix,
                                                           host),
                          activities=activities.activities()) as worker:
            yield worker
