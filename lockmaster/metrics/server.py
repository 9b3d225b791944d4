"""A worker process's metrics: set up before its Temporal client, served on metrics.port.

    install_process_metrics()        # before the first Temporal client of the process
    server = start_worker_metrics(client, config, role)   # None when off or not bound
    ...
    server.stop()

A metrics server that cannot bind is a warning; the workers run on without it (as the other
auxiliary servers, workers/aux_servers.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import disable_created_metrics, start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from temporalio.client import Client

from lockmaster import metrics
from lockmaster.config.models import LockmasterConfig
from lockmaster.metrics import temporal_sdk
from lockmaster.metrics.collector import WorkflowStateCollector
from lockmaster.metrics.domain import domain
from lockmaster.metrics.registry import process_registry

log = logging.getLogger(__name__)

# Roles that read the long-lived workflows' state (one of them per deployment is enough; more
# report the same numbers, which `max by` in the dashboards folds).
STATE_ROLES = ("orchestrator", "all")

_setup_lock = threading.Lock()
_process_done = False
_state: WorkflowStateCollector | None = None


def install_process_metrics() -> None:
    """The process registry gets the Temporal SDK's metrics (its default runtime now records
    into a buffer this drains), the process's CPU/memory/GC, and lockmaster's domain metrics.
    Idempotent."""
    global _process_done
    with _setup_lock:
        if _process_done:
            return
        # No `_created` series beside every counter and histogram: Prometheus does not need
        # them, and they would be a third of what a scrape carries.
        disable_created_metrics()
        registry = process_registry()
        temporal_sdk.install(registry)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        domain()
        metrics.enabled = True
        _process_done = True


def attach_workflow_state(client: Client, config: LockmasterConfig) -> WorkflowStateCollector:
    """Register the collect-on-scrape collector of the workflows' state (once per process; call
    from the event loop the client belongs to)."""
    global _state
    with _setup_lock:
        if _state is None:
            _state = WorkflowStateCollector(client, config, domain(), asyncio.get_running_loop())
            process_registry().register(_state)
        return _state


def workflow_state() -> WorkflowStateCollector | None:
    return _state


def reconfigure_metrics(config: LockmasterConfig) -> None:
    """A reloaded configuration reaches the workflows' state collector, if this process has
    one (its pipelines and regions label the gauges)."""
    if _state is not None:
        _state.reconfigure(config)


@dataclass
class MetricsServer:
    url: str
    stop: Callable[[], None]


def start_metrics_server(listen: str, port: int) -> MetricsServer:
    """prometheus-client's HTTP server (a thread) on listen:port serving the process registry.
    OSError: the port cannot be bound."""
    httpd, thread = start_http_server(port, addr=listen, registry=process_registry())

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)

    host = f"[{listen}]" if ":" in listen else listen
    return MetricsServer(f"http://{host}:{httpd.server_address[1]}/metrics", stop)


def start_worker_metrics(client: Client | None, config: LockmasterConfig, role: str,
                         report: Callable[[str], None] | None = None,
                         port: int | None = None) -> MetricsServer | None:
    """The metrics of a worker process, on `port` or else metrics.port (None when neither is
    set: off). Roles in STATE_ROLES also serve the workflows' state (given a client). Call
    from the client's event loop."""
    install_process_metrics()
    if role in STATE_ROLES and client is not None:
        attach_workflow_state(client, config)
    listen, port = config.metrics.listen, port or config.metrics.port
    if port is None:
        return None
    try:
        server = start_metrics_server(listen, port)
    except OSError as exc:
        (report or log.warning)(
            f"the metrics server did not start: {listen}:{port}: {exc} "
            "(stop what uses the port, or change metrics.port); the workers run on without it")
        return None
    log.info("serving metrics on %s", server.url)
    return server
