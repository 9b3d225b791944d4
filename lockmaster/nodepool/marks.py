"""How lockmaster marks what it creates in a cloud, so it can find it again: server names and
metadata, floating IP descriptions. Shared by the pool workflow and the launcher activities."""

from __future__ import annotations

from lockmaster.model.nodes import Node, PoolSpec


def server_name(spec: PoolSpec, node_id: str, attempt: int) -> str:
    """Readable, and unique per node and launch attempt (a retried launch finds its server)."""
    return f"lm-{spec.provider}-{spec.pool}-{node_id}-{attempt}"


def pool_marks(spec: PoolSpec) -> dict[str, str]:
    return {"lockmaster-provider": spec.provider, "lockmaster-pool": spec.pool}


def marks(spec: PoolSpec, node: Node) -> dict[str, str]:
    return {
        **pool_marks(spec),
        "lockmaster-node": node.id,
        "lockmaster-attempt": str(node.launch_attempt),
        "lockmaster-label": node.labels[0],
    }


def fip_prefix(spec: PoolSpec) -> str:
    return f"lockmaster {spec.provider}/{spec.pool}/"


def fip_description(spec: PoolSpec, node: Node) -> str:
    return f"{fip_prefix(spec)}{node.id}"
