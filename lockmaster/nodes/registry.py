"""The configured node providers, and which one a build's label goes to."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

from lockmaster.config.models import LocalProvider as LocalProviderConfig
from lockmaster.config.models import NodesConfig, OpenStackProvider
from lockmaster.config.models import StaticProvider as StaticProviderConfig
from lockmaster.nodes.base import Node, NodeError, NodeProvider, Nodeset
from lockmaster.nodes.local import LocalProvider
from lockmaster.nodes.static import StaticProvider


class NodePoolProvider:
    """An OpenStack provider used without the node pool: its nodes only come from the pool."""

    def __init__(self, config: OpenStackProvider) -> None:
        self.name = config.name
        self.labels = {label.name for pool in config.pools for label in pool.labels}

    def serves(self, label: str) -> bool:
        return label in self.labels

    async def acquire(self, label: str, build_id: str) -> Node:
        raise NodeError(
            f"label {label!r} is served by OpenStack provider {self.name!r}, whose nodes come "
            "only from the node pool workflows (run the executor with a Temporal server)"
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

    # --- as a NodeSource (no pool: providers hand out nodes directly, nothing is held) ---------

    async def acquire_nodeset(
        self, labels: list[str], request_id: str, *, precedence: int = 1, position: int = 0,
        holder: str = "", arrived: float | None = None,
    ) -> Nodeset:
        nodeset = Nodeset(request_id=request_id)
        try:
            for index, label in enumerate(labels):
                # Each node of the set needs its own workspace name (they may share a host).
                name = request_id if index == 0 else f"{request_id}-{index}"
                nodeset.nodes.append(await self.acquire(label, name))
        except BaseException:
            await asyncio.shield(self.release_nodeset(nodeset))
            raise
        return nodeset

    async def release_nodeset(self, nodeset: Nodeset, *, hold_until: float | None = None,
                              hold_reason: str | None = None) -> None:
        for node in nodeset.nodes:
            with contextlib.suppress(Exception):
                await self.release(node)

    async def autohold_until(self, nodeset: Nodeset, project: str, job: str, change: int
                             ) -> tuple[float, str] | None:
        return None


def _labels(providers: Sequence[NodeProvider]) -> set[str]:
    # Only for error messages: the protocol has `serves`, our providers also list `labels`.
    found: set[str] = set()
    for p in providers:
        found |= set(getattr(p, "labels", ()))
    return found
