"""The one prometheus-client registry of a process, and its text exposition."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Not prometheus-client's global REGISTRY: its default process and platform collectors are
# added explicitly (metrics/server.py), and tests build fresh registries of their own.
_REGISTRY = CollectorRegistry(auto_describe=True)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def process_registry() -> CollectorRegistry:
    return _REGISTRY


def exposition(registry: CollectorRegistry | None = None) -> bytes:
    """The text format Prometheus scrapes (calls every collector: the Temporal SDK's drain and,
    where registered, the workflows' state)."""
    return generate_latest(registry or _REGISTRY)
