"""lockmaster's own metrics: every name, type and label in one place (docs/metrics.md lists them).

Labels are bounded: they name configured things (pipeline, queue, job_name, provider, region,
pool, label, mirror, repository), a small fixed set (result, state, event, reason), never a change
number, build id or node id, so the number of series does not grow with the work done.

Two kinds live here:
- observed where the side effect happens (activities, the event router): counters and
  histograms, through the `observe_*` methods, each a few dictionary look-ups;
- set at scrape time from the long-lived workflows' queries (metrics/workflow_state.py): the
  gauges, plus the queues' resident-time histogram, observed when a scrape sees an item gone.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram

from lockmaster.metrics.registry import process_registry

# Every label a lockmaster_ metric may carry (tests/test_metrics.py checks the definitions).
BOUNDED_LABELS = frozenset({
    # `job_name`, not `job`: Prometheus gives every scraped series a `job` label of its own
    # (the scrape job) and would rename ours to `exported_job`.
    "pipeline", "queue", "job_name", "result", "provider", "region", "pool", "state", "label",
    "event", "reason", "mirror", "repository", "kind",
})

# Seconds: from a fraction of a second (an event, a cached launch) to hours (a long job).
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200,
                    14400)
# Jobs: fewer buckets (one histogram per pipeline and job), from half a minute to hours.
JOB_BUCKETS = (30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
# Event intake lag: Gerrit stamps events in whole seconds; minutes mean something is wrong.
LAG_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)


# The gauges read from the long-lived workflows at scrape time (metrics/workflow_state.py makes
# their families): key -> (name, help, labels).
STATE_GAUGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "queue_items": ("lockmaster_queue_items",
                    "Items in a queue (a gate queue; an independent pipeline counts as one queue "
                    "named after it).", ("pipeline", "queue")),
    "queue_active": ("lockmaster_queue_active_items", "Items within a gate queue's window.",
                     ("pipeline", "queue")),
    "queue_failing": ("lockmaster_queue_failing_items", "Items failing in a gate queue.",
                      ("pipeline", "queue")),
    "queue_oldest": ("lockmaster_queue_oldest_item_age_seconds",
                     "Age of the oldest item in a queue (0: empty).", ("pipeline", "queue")),
    "queue_window": ("lockmaster_queue_window", "A gate queue's current window.",
                     ("pipeline", "queue")),
    "queue_busy": ("lockmaster_queue_busy",
                   "1 while a gate queue has merges, builds, reports or commands in flight.",
                   ("pipeline", "queue")),
    "queue_stuck": ("lockmaster_queue_stuck_work",
                    "Reports or submits of a gate queue that keep failing (review system down).",
                    ("pipeline", "queue")),
    "nodes": ("lockmaster_nodes", "Nodes of a pool, by state.",
              ("provider", "region", "pool", "state")),
    "pool_max": ("lockmaster_pool_max_servers",
                 "A pool's quota (max-servers; absent when unlimited).",
                 ("provider", "region", "pool")),
    "pool_paused": ("lockmaster_pool_quota_paused",
                    "1 while a pool waits after the cloud said its quota is used.",
                    ("provider", "region", "pool")),
    "pool_enabled": ("lockmaster_pool_enabled", "1 when a pool takes new launches.",
                     ("provider", "region", "pool")),
    "node_requests": ("lockmaster_node_requests", "Node requests a pool holds, by state.",
                      ("provider", "region", "pool", "state")),
    "request_oldest": ("lockmaster_node_request_oldest_pending_age_seconds",
                       "Age of a pool's oldest pending node request (0: none).",
                       ("provider", "region", "pool")),
    "te": ("lockmaster_te_environments",
           "Test environments of a label, by state (available, leased, resetting, quarantined, "
           "draining).", ("label", "state")),
    "te_waiting": ("lockmaster_te_waiting_leases", "Lease requests waiting for a TE.",
                   ("label",)),
    "te_oldest_wait": ("lockmaster_te_oldest_wait_seconds",
                       "How long the longest-waiting lease request has waited (0: none).",
                       ("label",)),
    "te_stuck": ("lockmaster_te_stuck_resets", "TE resets whose host does not answer.",
                 ("label",)),
    "publish_entries": ("lockmaster_publish_queue_entries",
                        "Changes in a repository's publish queue, by state.",
                        ("repository", "state")),
    "unanswered": ("lockmaster_workflows_unanswered",
                   "Long-lived workflows that did not answer the last scrape's query, by kind.",
                   ("kind",)),
}


class DomainMetrics:
    """All lockmaster_ metrics on one registry (the process's, or a test's fresh one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        c = _Maker(registry)
        # --- builds (executor activity) ---------------------------------------------------
        self.builds = c.counter("builds", "Builds finished, by pipeline, job and result.",
                                ("pipeline", "job_name", "result"))
        # Not by result: jobs are many (hundreds in a large deployment), and a histogram's
        # series are ~(buckets + 3) per label set; the counter above carries the result.
        self.job_duration = c.histogram(
            "job_duration_seconds", "Run time of finished builds (start to end on the node).",
            ("pipeline", "job_name"), JOB_BUCKETS)
        # --- events (router) -------------------------------------------------------------
        self.events = c.counter("events", "Review events routed, by event type.", ("event",))
        self.intake_lag = c.histogram(
            "event_intake_lag_seconds",
            "From the review system creating an event to lockmaster routing it.",
            ("event",), LAG_BUCKETS)
        # --- node launches (launcher activity) -------------------------------------------
        self.launches = c.counter(
            "node_launches", "Cloud node launch attempts, by outcome (ok, error, quota).",
            ("provider", "region", "pool", "result"))
        self.launch_errors = c.counter(
            "node_launch_errors", "Failed cloud node launches, by reason (cloud, quota, timeout).",
            ("provider", "region", "pool", "reason"))
        self.launch_time = c.histogram(
            "node_launch_seconds", "From create to SSH answering, of successful launches.",
            ("provider", "region", "pool"), DURATION_BUCKETS)
        # --- publishing (publisher activities) -------------------------------------------
        self.publication = c.histogram(
            "publication_seconds", "Publishing one change's packages to the stable repository.",
            ("result",), DURATION_BUCKETS)
        self.mirror_sync = c.histogram(
            "mirror_sync_seconds", "Syncing one mirror to a snapshot.", ("mirror", "result"),
            DURATION_BUCKETS)
        # --- from the long-lived workflows, at scrape time --------------------------------
        self.resident = c.histogram(
            "queue_resident_seconds",
            "Time items spent in a queue (gate) or pipeline (check), observed when a scrape "
            "sees them gone; precise to the scrape interval.",
            ("pipeline", "queue"), DURATION_BUCKETS)
        self.state_errors = c.counter(
            "workflow_state_errors",
            "Scrapes whose listing of workflows failed (Temporal unreachable).", ())

    # --- the observations of activities and starters; cheap, never raising on bad values ---

    def observe_build(self, pipeline: str, job: str, result: str,
                      duration: float | None) -> None:
        self.builds.labels(pipeline, job, result).inc()
        if duration is not None and duration >= 0:
            self.job_duration.labels(pipeline, job).observe(duration)

    def observe_event(self, event: str, lag: float | None) -> None:
        self.events.labels(event).inc()
        if lag is not None:
            # A clock a little ahead of Gerrit's would make it negative: that is no lag.
            self.intake_lag.labels(event).observe(max(lag, 0.0))

    def observe_launch(self, provider: str, region: str, pool: str, outcome: str,
                       seconds: float, reason: str = "") -> None:
        """`outcome`: ok, error or quota; `reason` for errors: cloud, quota or timeout."""
        self.launches.labels(provider, region, pool, outcome).inc()
        if outcome == "ok":
            self.launch_time.labels(provider, region, pool).observe(seconds)
        else:
            self.launch_errors.labels(provider, region, pool, reason or outcome).inc()

    def observe_publication(self, result: str, seconds: float) -> None:
        self.publication.labels(result).observe(seconds)

    def observe_mirror_sync(self, mirror: str, result: str, seconds: float) -> None:
        self.mirror_sync.labels(mirror, result).observe(seconds)

    def names(self) -> set[str]:
        """Every sample name these metrics export (`_total`, `_bucket`, ... included)."""
        out: set[str] = set()
        for family in self.registry.collect():
            if family.name.startswith("lockmaster_"):
                out.add(family.name)
                out.update(s.name for s in family.samples)
                suffixes = {"counter": ("_total", "_created"),
                            "histogram": ("_bucket", "_count", "_sum", "_created")}
                out.update(family.name + s for s in suffixes.get(family.type, ()))
        out.update(name for name, _, _ in STATE_GAUGES.values())
        return out


class _Maker:
    """Makes lockmaster_-prefixed metrics on one registry, checking their labels are bounded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def _check(self, name: str, labels: tuple[str, ...]) -> None:
        unbounded = set(labels) - BOUNDED_LABELS
        if unbounded:
            raise ValueError(f"lockmaster_{name}: label(s) {sorted(unbounded)} are not in "
                             "BOUNDED_LABELS (metrics/domain.py): add them only if bounded")

    def counter(self, name: str, doc: str, labels: tuple[str, ...]) -> Counter:
        self._check(name, labels)
        return Counter(f"lockmaster_{name}", doc, labels, registry=self.registry)

    def histogram(self, name: str, doc: str, labels: tuple[str, ...],
                  buckets: tuple[float, ...]) -> Histogram:
        self._check(name, labels)
        return Histogram(f"lockmaster_{name}", doc, labels, registry=self.registry,
                         buckets=buckets)


_domain: DomainMetrics | None = None
_lock = threading.Lock()


def domain() -> DomainMetrics:
    """The process's domain metrics (made on first use, on the process registry)."""
    global _domain
    if _domain is None:
        with _lock:
            if _domain is None:
                _domain = DomainMetrics(process_registry())
    return _domain
