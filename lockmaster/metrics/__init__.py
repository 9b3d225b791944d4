"""Prometheus metrics (docs/metrics.md): one prometheus-client registry per process holding
the Temporal SDK's metrics (temporal_sdk.py), lockmaster's domain metrics (domain.py, observed
in activities and starters) and, in orchestrator processes, the long-lived workflows' state
read at scrape time (collector.py, workflow_state.py). Served on `metrics.port` by workers
(server.py) and at /metrics by the web service (lockmaster/web/metrics_route.py).

Observing a metric never fails the work it measures: `observe()` swallows and logs errors."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

# Set by server.install_process_metrics: this process serves its metrics. Code that also runs
# in one-shot processes (the event router in a Gerrit hook) observes only then: a hook exits
# after one event, and importing prometheus-client there would only cost it time.
enabled = False


def observe_event(event_type: str, created: float | None) -> None:
    """An event routed: counted, and its intake lag (from `created`, the review system's time)
    observed, in processes that serve metrics."""
    if not enabled:
        return
    import time

    from lockmaster.metrics.domain import domain

    observe(domain().observe_event, event_type,
            None if created is None else time.time() - created)


def observe(record: Callable[..., None], *args: object) -> None:
    """`observe(domain().observe_build, ...)`: a metric that cannot be recorded is logged, and
    the build, launch or event it describes goes on."""
    try:
        record(*args)
    except Exception as exc:  # a label value prometheus-client refuses, ...
        log.warning("metric %s not recorded: %s", getattr(record, "__name__", record), exc)
