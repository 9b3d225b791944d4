"""Run worker roles in this process until interrupted: `lockmaster worker ROLE`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess

from temporalio.client import Client
from temporalio.worker import Worker

from lockmaster.config.models import GerritConnection, LockmasterConfig
from lockmaster.metrics.server import start_worker_metrics
from lockmaster.packaging import roots_keeper
from lockmaster.publishing.signing import usable_home
from lockmaster.review.base import ReviewDriver
from lockmaster.review.local import LocalReviewDriver
from lockmaster.review.registry import review_drivers
from lockmaster.starters.nodepool import ensure_pools
from lockmaster.starters.testenv import ensure_brokers
from lockmaster.workers.aux_servers import AuxServers, start_aux_servers
from lockmaster.workers.executor import executor_worker
from lockmaster.workers.launcher import launcher_worker
from lockmaster.workers.orchestrator import orchestrator_worker
from lockmaster.workers.publisher import publisher_worker
from lockmaster.workers.te_host import te_host_worker

ROLES = ("orchestrator", "executor", "launcher", "publisher", "all")
log = logging.getLogger(__name__)


def fetch_drivers(config: LockmasterConfig) -> dict[str, ReviewDriver]:
    """The review drivers of roles that only fetch changes (executor, publisher: their git URLs,
    which need no credentials). A Gerrit connection's HTTP password is not read: it is a secret
    of the orchestrator's, and a deployment gives it to no other role (docs/deployment.md)."""
    drivers: dict[str, ReviewDriver] = {}
    for name, conn in config.connections.items():
        if isinstance(conn, GerritConnection):
            from lockmaster.review.gerrit import GerritDriver

            drivers[name] = GerritDriver(name, conn, password="")
        else:
            drivers[name] = LocalReviewDriver(name, config.local_review_path(name))
    return drivers


def make_workers(client: Client, config: LockmasterConfig, role: str) -> list[Worker]:
    # Reports and submits (orchestrator) need the review systems' credentials; the other roles
    # fetch changes at most.
    drivers = review_drivers(config) if role in ("orchestrator", "all") else fetch_drivers(config)
    workers = []
    if role in ("orchestrator", "all"):
        workers.append(orchestrator_worker(client, config, drivers))
    if role in ("executor", "all"):
        workers.append(executor_worker(client, config, drivers))
    if role in ("launcher", "all"):
        workers.append(launcher_worker(client, config))
    if role in ("publisher", "all"):
        workers.append(publisher_worker(client, config, drivers))
    return workers


async def run_workers(
    client: Client, config: LockmasterConfig, role: str, stop: asyncio.Event,
    servers: AuxServers | None = None,
) -> None:
    """Run until `stop` is set; then stop polling and let running activities finish or cancel.
    `servers`: the auxiliary servers (log server, mirrors, package cache) when the caller
    started them and stops them; otherwise the role's own start here and stop at the end."""
    workers = make_workers(client, config, role)
    if role in ("orchestrator", "all"):
        # The pools and TE brokers must run before any build asks them.
        await ensure_pools(client, config)
        await ensure_brokers(client, config)
    own = servers is None
    if servers is None:
        # A server that cannot start is reported; the workers run on without it.
        servers = await asyncio.to_thread(start_aux_servers, config, role)
    # /metrics on metrics.port (off when unset); one that cannot bind is a warning.
    metrics = start_worker_metrics(client, config, role)
    keeper = None
    if role in ("executor", "all") and roots_keeper.wanted(config):
        # Local nodes build here: their distribution roots are prepared ahead and refreshed.
        keeper = asyncio.create_task(roots_keeper.keep_roots_ready(config, stop))
    try:
        async with contextlib.AsyncExitStack() as stack:
            for worker in workers:
                await stack.enter_async_context(worker)
            if role == "all":
                # Development: every configured TE host's worker runs here too (test:///default).
                for host in config.testenvs.hosts:
                    await stack.enter_async_context(te_host_worker(client, config, host.name))
            elif role.startswith("te-host:"):
                await stack.enter_async_context(
                    te_host_worker(client, config, role.split(":", 1)[1]))
            await stop.wait()
    finally:
        if keeper is not None:
            keeper.cancel()
        if metrics is not None:
            await asyncio.to_thread(metrics.stop)
        if own:
            # The package cache is a process of its own: it must not outlive the workers.
            await asyncio.to_thread(servers.stop)
    signing = config.publishing.signing
    if signing is not None and role in ("publisher", "all"):
        # gpg started an agent for the signing key's home: it goes when the publisher does.
        home = usable_home(config.resolve(signing.gnupg_home))
        if home.exists():
            await asyncio.to_thread(subprocess.run, ["gpgconf", "--homedir", str(home),
                                                     "--kill", "all"], capture_output=True)
