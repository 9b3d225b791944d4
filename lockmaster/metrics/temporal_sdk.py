"""The Temporal SDK's own metrics (polls, task latencies, schedule-to-start, slots, sticky
cache...) in the process's registry.

The SDK's core records metrics into a `MetricBuffer` when its Runtime is made with one
(temporalio.runtime.TelemetryConfig(metrics=MetricBuffer(...))); this module makes that
Runtime the process's default before any client connects (every client and worker of the
process then records into it) and turns the buffer's updates into Prometheus samples:
counters add deltas, gauges keep the last value, histograms count into fixed buckets. One
endpoint then serves both the SDK's and lockmaster's metrics, instead of the SDK's own
Prometheus server on a second port.

The buffer must be drained regularly or the core drops updates: a daemon thread drains it
every second, and every scrape drains it first.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

BUFFER_SIZE = 100_000
DRAIN_INTERVAL = 1.0
# Seconds (the buffer is asked for durations as float seconds): poll and task latencies run
# from milliseconds (a sticky workflow task) to a minute (a long poll).
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# The SDK metrics the alert rules and dashboards use (names as exported here: counters with
# `_total`, histograms with `_bucket`/`_count`/`_sum`; the SDK's metrics reference lists them).
# tests/test_metrics_scrape.py sees a running worker export them.
USED_SDK_METRICS = frozenset({
    "temporal_request", "temporal_request_failure",
    "temporal_workflow_task_schedule_to_start_latency",
    "temporal_activity_schedule_to_start_latency",
})

# Kinds as temporalio.runtime defines them (BUFFERED_METRIC_KIND_*).
COUNTER, GAUGE, HISTOGRAM = 0, 1, 2

Key = tuple[tuple[str, str], ...]


def _key(attributes: Mapping[str, Any]) -> Key:
    return tuple(sorted((str(k), _label_value(v)) for k, v in attributes.items()))


def _label_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Series:
    __slots__ = ("buckets", "count", "sum", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.buckets = [0] * len(BUCKETS)  # not cumulative; made so at exposition
        self.count = 0
        self.sum = 0.0


class _Family:
    def __init__(self, name: str, kind: int, doc: str) -> None:
        self.name = name
        self.kind = kind
        self.doc = doc
        self.series: dict[Key, _Series] = {}


class SDKMetrics(Collector):
    """The SDK's buffered updates as Prometheus families (pure: `apply` takes updates, `collect`
    yields families; `drain` is given the buffer's retrieve function)."""

    def __init__(self, retrieve: Any = None) -> None:
        self._retrieve = retrieve  # MetricBuffer.retrieve_updates, or None (tests apply)
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()

    def apply(self, updates: Sequence[Any]) -> None:
        with self._lock:
            for update in updates:
                metric = update.metric
                family = self._families.get(metric.name)
                if family is None:
                    family = _Family(metric.name, int(metric.kind),
                                     metric.description or f"Temporal SDK metric {metric.name}")
                    self._families[metric.name] = family
                key = _key(update.attributes)
                series = family.series.get(key)
                if series is None:
                    series = family.series[key] = _Series()
                value = float(update.value)
                if family.kind == COUNTER:
                    series.value += value
                elif family.kind == GAUGE:
                    series.value = value
                else:
                    series.count += 1
                    series.sum += value
                    for index, bound in enumerate(BUCKETS):
                        if value <= bound:
                            series.buckets[index] += 1
                            break

    def drain(self) -> None:
        if self._retrieve is None:
            return
        try:
            updates = self._retrieve()
        except Exception as exc:  # metrics must never take a worker down
            log.warning("draining the Temporal SDK's metric buffer: %s", exc)
            return
        self.apply(updates)

    def collect(self) -> Iterator[Metric]:
        self.drain()
        with self._lock:
            families = list(self._families.values())
            out = [self._metric(f) for f in families]
        yield from out

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names appear as the SDK records them

    def _metric(self, family: _Family) -> Metric:
        kind = {COUNTER: "counter", GAUGE: "gauge"}.get(family.kind, "histogram")
        metric = Metric(family.name, family.doc, kind)
        for key, series in family.series.items():
            labels = dict(key)
            if kind == "counter":
                metric.add_sample(metric.name + "_total", labels, series.value)
            elif kind == "gauge":
                metric.add_sample(metric.name, labels, series.value)
            else:
                cumulative = 0
                for bound, count in zip(BUCKETS, series.buckets, strict=True):
                    cumulative += count
                    metric.add_sample(metric.name + "_bucket", {**labels, "le": _le(bound)},
                                      cumulative)
                metric.add_sample(metric.name + "_bucket", {**labels, "le": "+Inf"},
                                  series.count)
                metric.add_sample(metric.name + "_count", labels, series.count)
                metric.add_sample(metric.name + "_sum", labels, series.sum)
        return metric


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


_installed: SDKMetrics | None = None
_install_lock = threading.Lock()


def install(registry: CollectorRegistry) -> SDKMetrics:
    """Make a Runtime recording into a buffer the process's default Temporal runtime, and
    register its collector on `registry`. Call before the process's first Temporal client;
    a second call returns the first's collector. If a default runtime exists already (a client
    was made first), the SDK's metrics stay off and this says so (a warning, not an error)."""
    global _installed
    with _install_lock:
        if _installed is not None:
            return _installed
        from temporalio.runtime import (
            MetricBuffer,
            MetricBufferDurationFormat,
            Runtime,
            TelemetryConfig,
        )

        buffer = MetricBuffer(BUFFER_SIZE, MetricBufferDurationFormat.SECONDS)
        runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
        collector = SDKMetrics(buffer.retrieve_updates)
        try:
            Runtime.set_default(runtime, error_if_already_set=True)
        except RuntimeError:
            log.warning("the Temporal runtime was made before metrics were set up: the "
                        "Temporal SDK's metrics are not exported by this process")
            collector = SDKMetrics(None)
        registry.register(collector)
        if collector._retrieve is not None:
            threading.Thread(target=_drain_forever, args=(collector,), daemon=True,
                             name="temporal-metrics-drain").start()
        _installed = collector
        return collector


def _drain_forever(collector: SDKMetrics) -> None:
    stop = threading.Event()
    while not stop.wait(DRAIN_INTERVAL):
        collector.drain()
