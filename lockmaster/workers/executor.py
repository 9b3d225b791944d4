"""The executor role: runs builds on nodes, on the executor task queue."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from lockmaster.activities.executor import ExecutorActivities
from lockmaster.config.models import (
    LockmasterConfig,
    NodesConfig,
    OpenStackProvider,
    StaticProvider,
)
from lockmaster.execution.log_shipping import log_shipping
from lockmaster.execution.runner import BuildRunner
from lockmaster.execution.secrets import config_secrets
from lockmaster.git.cache import RepoCache
from lockmaster.git.workspace import GitWorkspacePreparer
from lockmaster.nodes.base import NodeSource
from lockmaster.nodes.pooled import PooledNodes
from lockmaster.nodes.registry import NodeProviders
from lockmaster.review.base import ReviewDriver
from lockmaster.signatures.library import library_for
from lockmaster.starters.testenv import TEHolder
from lockmaster.temporal.task_queues import Role, task_queue
from lockmaster.workers.common import project_connections


def build_runner(
    config: LockmasterConfig, drivers: dict[str, ReviewDriver], client: Client | None = None
) -> BuildRunner:
    """With a Temporal client, nodes come from the node pool workflows (the deployment); without
    one, straight from the configured providers (tools and tests that run no pools)."""
    cache = RepoCache(
        config.state_path / "git" / "executor",
        lambda connection, project: drivers[connection].git_url(project),
    )
    nodes: NodeSource = (
        PooledNodes(client, config, config.state_path) if client is not None
        else NodeProviders.from_config(_resolved_nodes(config), config.state_path)
    )
    testenvs = None
    if client is not None and config.testenvs.hosts:
        def testenvs(label: str, lease_id: str, holder: str, precedence: int) -> TEHolder:
            return TEHolder(client, config, label, lease_id, holder, precedence=precedence)

    return BuildRunner(
        testenvs=testenvs,
        providers=nodes,
        preparer=GitWorkspacePreparer(cache, project_connections(config)),
        # Driver http: the build's logs are written into the local spool and shipped.
        logs_root=config.logs_spool if config.logs.store.driver == "http" else config.logs_root,
        logs_url=config.logs.url,
        work_root=config.state_path / "work",
        secrets=config_secrets(config),
        shipping=log_shipping(config),
        signatures=library_for(config),  # known failures (docs/signatures.md)
    )


def _resolved_nodes(config: LockmasterConfig) -> NodesConfig:
    """Key files relative to the config file, as every path in it."""
    nodes = config.nodes.model_copy(deep=True)
    for provider in nodes.providers:
        if isinstance(provider, OpenStackProvider):
            if provider.key_file is not None:
                provider.key_file = config.resolve(provider.key_file)
        elif isinstance(provider, StaticProvider):
            for pool in provider.pools:
                for node in pool.nodes:
                    node.key_file = config.resolve(node.key_file)
    return nodes


def executor_worker(
    client: Client, config: LockmasterConfig, drivers: dict[str, ReviewDriver],
    *, heartbeat_interval: float = 2.0, max_concurrent_builds: int = 50,
) -> Worker:
    """Heartbeats reach the server at least every `heartbeat_interval` (the SDK would otherwise
    hold them back for most of the heartbeat timeout), so a cancelled check stops its commands
    within seconds."""
    activities = ExecutorActivities(build_runner(config, drivers, client), heartbeat_interval)
    return Worker(
        client,
        task_queue=task_queue(config.temporal.task_queue_prefix, Role.EXECUTOR),
        activities=[activities.run_build],
        max_concurrent_activities=max_concurrent_builds,
        max_heartbeat_throttle_interval=timedelta(seconds=heartbeat_interval),
        default_heartbeat_throttle_interval=timedelta(seconds=heartbeat_interval),
    )
