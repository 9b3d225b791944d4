"""From the configuration to what each pool workflow serves (`PoolSpec`: no secrets in it)."""

from __future__ import annotations

from lockmaster.config.models import (
    LocalProvider,
    LockmasterConfig,
    NodesConfig,
    OpenStackProvider,
    StaticProvider,
)
from lockmaster.model.nodes import Driver, LabelSpec, PoolSpec, SlotSpec


def pool_id(provider: str, pool: str, prefix: str = "") -> str:
    return f"{prefix}nodepool/{provider}/{pool}"


AUTOHOLD_ID = "nodepool/autoholds"


def pool_specs(config: LockmasterConfig) -> list[PoolSpec]:
    """Every pool of every provider, in configuration order. A label's `min-ready` is kept by
    the first cloud pool serving it (one place decides, so it is not kept twice)."""
    nodes = config.nodes
    min_ready = {label.name: label.min_ready for label in nodes.labels}
    keeper: dict[str, str] = {}
    specs: list[PoolSpec] = []
    for provider in nodes.providers:
        for pool in provider.pools:
            if isinstance(provider, OpenStackProvider):
                spec = _cloud_pool(config, nodes, provider, pool.name)
                for label in spec.labels:
                    keeper.setdefault(label, f"{provider.name}/{pool.name}")
                    if keeper[label] == f"{provider.name}/{pool.name}":
                        spec.labels[label].min_ready = min_ready.get(label, 0)
            elif isinstance(provider, StaticProvider):
                spec = _static_pool(provider, pool.name)
            else:
                spec = _local_pool(provider, pool.name)
            specs.append(spec)
    return specs


def _cloud_pool(
    config: LockmasterConfig, nodes: NodesConfig, provider: OpenStackProvider, name: str
) -> PoolSpec:
    pool = next(p for p in provider.pools if p.name == name)
    labels = {
        label.name: LabelSpec(
            name=label.name, image=label.image, flavor=label.flavor, key_name=label.key_name,
            username=label.username, port=label.connection_port,
            boot_from_volume=label.boot_from_volume, volume_size=label.volume_size,
        )
        for label in pool.labels
    }
    clouds_file = config.resolve(provider.clouds_file) if provider.clouds_file else None
    return PoolSpec(
        provider=provider.name, pool=pool.name, driver=Driver.OPENSTACK, labels=labels,
        cloud=provider.cloud, region=provider.region,
        clouds_file=str(clouds_file) if clouds_file else None,
        max_servers=pool.max_servers, max_cores=pool.max_cores, max_ram=pool.max_ram,
        networks=list(pool.networks), floating_ip_network=pool.floating_ip_network,
        launch_timeout=provider.launch_timeout, boot_timeout=provider.boot_timeout,
        launch_attempts=provider.launch_attempts, cleanup_interval=nodes.cleanup_interval,
        quota_backoff=nodes.quota_backoff, heartbeat_timeout=nodes.heartbeat_timeout,
    )


def _static_pool(provider: StaticProvider, name: str) -> PoolSpec:
    pool = next(p for p in provider.pools if p.name == name)
    slots: list[SlotSpec] = []
    labels: dict[str, LabelSpec] = {}
    for node in pool.nodes:
        for label in node.labels:
            labels.setdefault(label, LabelSpec(name=label, username=node.username))
        for slot in range(node.max_parallel_jobs):
            slots.append(SlotSpec(
                node_id=f"{node.name}-{slot}", labels=list(node.labels), static_node=node.name,
                host=node.host, port=node.port, username=node.username, host_key=node.host_key,
            ))
    return PoolSpec(provider=provider.name, pool=pool.name, driver=Driver.STATIC,
                    labels=labels, slots=slots)


def _local_pool(provider: LocalProvider, name: str) -> PoolSpec:
    pool = next(p for p in provider.pools if p.name == name)
    labels = {label: LabelSpec(name=label) for label in pool.labels}
    slots = [SlotSpec(node_id=f"slot-{i}", labels=list(pool.labels))
             for i in range(pool.max_servers)]
    return PoolSpec(provider=provider.name, pool=pool.name, driver=Driver.LOCAL, labels=labels,
                    slots=slots, max_servers=pool.max_servers)
