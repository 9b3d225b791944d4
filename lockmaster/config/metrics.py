"""`metrics:` in lockmaster.yaml: where a worker process serves Prometheus's /metrics."""

from __future__ import annotations

from pydantic import Field

from lockmaster.config.base import ConfigModel

# The port production.yaml and the compose file use (Prometheus's registry of exporter
# ports lists 9464 as the OpenTelemetry/Prometheus exporter default).
DEFAULT_PORT = 9464


class MetricsConfig(ConfigModel):
    """A `lockmaster worker` process serves /metrics on listen:port when `port` is set, and not
    at all when it is unset (a developer's second worker on the same machine must not fight the
    first for a port). `lockmaster run` serves /metrics through its web service when there is
    one, else on this port when set."""

    listen: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    # How long answers of the long-lived workflows (queues, pools, TE brokers) are reused
    # between scrapes: several Prometheus servers scraping do not multiply the queries.
    cache_seconds: float = Field(default=5.0, ge=0)
    # How long one scrape waits for the workflows' answers before serving what it has.
    query_timeout: float = Field(default=5.0, gt=0)
