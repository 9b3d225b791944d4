"""The configured node providers, and which one a build's label goes to."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lockmaster.config.models import LocalProvider as LocalProviderConfig
from lockmaster.config.models import NodesConfig, OpenStackProvider
from lockmaster.config.models import StaticProvider as StaticProviderConfig
from lockmaster.nodes.base import Node, NodeError, NodeProvider
from lockmaster.nodes.local import LocalProvider
from lockmaster.nodes.static import StaticProvider


class NodePoolProvider:
    """An OpenStack provider: its nodes come from the node pool, which does not exist yet."""

    def __init__(self, config: OpenStackProvider) -> None:
        self.name = config.name
        self.labels = {label.name for pool in config.pools for label in pool.labels}

    def serves(self, label: str) -> bool:
        return label in self.labels

    async def acquire(self, label: str, build_id: str) -> Node:
        raise NodeError(
            f"label {label!r} is served by OpenStack provider {self.name!r}, whose nodes come "
            "from the node pool, which is not available yet"
        )

    async def release(self, node: Node) -> None:
        return None


class NodeProviders:
    """Every provider of a deployment, in configuration order."""

    def __init__(self, providers: Sequence[NodeProvider]) -> None:
        self.providers = list(providers)

    @classmethod
    def from_config(cls, config: NodesConfig, state_dir: Path) -> NodeProviders:
        """Local workspaces go under `<state_dir>/nodes/<provider>/<build_id>`."""
        providers: list[NodeProvider] = []
        for provider in config.providers:
            if isinstance(provider, LocalProviderConfig):
                providers.append(LocalProvider(provider, state_dir / "nodes" / provider.name))
            elif isinstance(provider, StaticProviderConfig):
                providers.append(StaticProvider(provider))
            else:
                providers.append(NodePoolProvider(provider))
        return cls(providers)

    def providers_for(self, label: str) -> list[NodeProvider]:
        return [p for p in self.providers if p.serves(label)]

    def provider(self, name: str) -> NodeProvider:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(f"node provider {name!r} is not configured")

    async def acquire(self, label: str, build_id: str) -> Node:
        """A node from the first provider serving `label` (waits for a free slot there)."""
        providers = self.providers_for(label)
        if not providers:
            served = sorted(_labels(self.providers))
            raise NodeError(
                f"no node provider serves label {label!r}"
                + (f" (labels served: {', '.join(served)})" if served else "")
            )
        return await providers[0].acquire(label, build_id)

    async def release(self, node: Node) -> None:
        await self.provider(node.info.provider).release(node)


def _labels(providers: Sequence[NodeProvider]) -> set[str]:
    # Only for error messages: the protocol has `serves`, our providers also list `labels`.
    found: set[str] = set()
    for p in providers:
        found |= set(getattr(p, "labels", ()))
    return found
