"""From what the long-lived workflows answer to gauges (pure: no Temporal, no clock of its own).

Workflows cannot touch a registry (the sandbox, and replay would count twice), so their state
is read at scrape time: metrics/collector.py asks the gate queues, node pools, TE brokers and
publish queues for their `status` and lists the running checks, and hands the answers here as
a `Snapshot`. `gauge_values` turns a snapshot into samples of domain.STATE_GAUGES; `Departures`
notices items that left a queue between two snapshots (their resident time).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily

from lockmaster.metrics.domain import STATE_GAUGES
from lockmaster.model.gate import QueueStatus as GateStatus
from lockmaster.model.nodes import NodeState, PoolStatus, RequestState
from lockmaster.model.publish import QueueState as PublishState
from lockmaster.model.publish import QueueStatus as PublishQueueStatus
from lockmaster.model.testenv import BrokerStatus, TEState


@dataclass(frozen=True)
class RunningCheck:
    """A running check workflow: its pipeline (from its ID) and when it started."""

    workflow_id: str
    pipeline: str
    started: float


@dataclass
class Snapshot:
    taken: float  # epoch seconds
    gates: list[GateStatus] = field(default_factory=list)
    # None: the listing failed (nothing is known about checks, none are counted as gone).
    checks: list[RunningCheck] | None = field(default_factory=list)
    check_pipelines: list[str] = field(default_factory=list)  # configured independent ones
    pools: list[PoolStatus] = field(default_factory=list)
    brokers: list[BrokerStatus] = field(default_factory=list)
    publish_queues: list[PublishQueueStatus] = field(default_factory=list)
    unanswered: Counter[str] = field(default_factory=Counter)  # workflow type -> how many


Samples = dict[str, dict[tuple[str, ...], float]]


def gauge_values(snap: Snapshot, regions: dict[str, str]) -> Samples:
    """Every state gauge's samples: key (domain.STATE_GAUGES) -> label values -> value.
    `regions`: provider name -> region ("" for static, local and region-less providers)."""
    out: Samples = {key: {} for key in STATE_GAUGES}
    now = snap.taken
    for gate in snap.gates:
        q = (gate.pipeline, gate.queue)
        out["queue_items"][q] = len(gate.items)
        out["queue_active"][q] = sum(1 for i in gate.items if i.active)
        out["queue_failing"][q] = sum(1 for i in gate.items if i.failing)
        oldest = min((i.enqueued_at for i in gate.items), default=None)
        out["queue_oldest"][q] = max(now - oldest, 0.0) if oldest is not None else 0.0
        out["queue_window"][q] = gate.window
        out["queue_busy"][q] = 1.0 if gate.busy else 0.0
        out["queue_stuck"][q] = len(gate.stuck)
    if snap.checks is not None:
        for pipeline in snap.check_pipelines:
            runs = [c for c in snap.checks if c.pipeline == pipeline]
            q = (pipeline, pipeline)
            out["queue_items"][q] = len(runs)
            oldest = min((c.started for c in runs), default=None)
            out["queue_oldest"][q] = max(now - oldest, 0.0) if oldest is not None else 0.0
    for pool in snap.pools:
        where = (pool.provider, regions.get(pool.provider, ""), pool.pool)
        states = Counter(n.state.value for n in pool.nodes)
        for state in NodeState:
            out["nodes"][(*where, state.value)] = states.get(state.value, 0)
        if pool.max_servers is not None:
            out["pool_max"][where] = pool.max_servers
        out["pool_paused"][where] = (1.0 if pool.paused_until is not None
                                     and pool.paused_until > now else 0.0)
        out["pool_enabled"][where] = 1.0 if pool.enabled else 0.0
        requests = Counter(r.state.value for r in pool.requests)
        for rstate in RequestState:
            out["node_requests"][(*where, rstate.value)] = requests.get(rstate.value, 0)
        pending = [r.arrived for r in pool.requests if r.state is RequestState.PENDING]
        out["request_oldest"][where] = max(now - min(pending), 0.0) if pending else 0.0
    for broker in snap.brokers:
        states = Counter(te.state.value for te in broker.tes)
        for tstate in TEState:
            out["te"][(broker.label, tstate.value)] = states.get(tstate.value, 0)
        out["te_waiting"][(broker.label,)] = len(broker.waiting)
        oldest = min((w.arrived for w in broker.waiting), default=None)
        out["te_oldest_wait"][(broker.label,)] = (max(now - oldest, 0.0)
                                                   if oldest is not None else 0.0)
        out["te_stuck"][(broker.label,)] = len(broker.stuck)
    for queue in snap.publish_queues:
        states = Counter(e.state.value for e in queue.entries)
        for pstate in PublishState:
            out["publish_entries"][(queue.repository, pstate.value)] = states.get(
                pstate.value, 0)
    for kind, count in snap.unanswered.items():
        out["unanswered"][(kind,)] = count
    return out


def families(samples: Samples) -> Iterator[GaugeMetricFamily]:
    for key, (name, doc, labels) in STATE_GAUGES.items():
        family = GaugeMetricFamily(name, doc, labels=list(labels))
        for values, value in sorted(samples.get(key, {}).items()):
            family.add_metric(list(values), float(value))
        yield family


# A queue's items as a departure tracker sees them: item key -> when it entered.
Items = dict[str, float]


def queue_items(snap: Snapshot) -> dict[tuple[str, str], Items]:
    """Per (pipeline, queue) that answered in this snapshot: its items and when each entered.
    Queues that did not answer are absent (their items are not taken for gone)."""
    out: dict[tuple[str, str], Items] = {}
    for gate in snap.gates:
        out[(gate.pipeline, gate.queue)] = {
            f"{i.project} {i.change}": i.enqueued_at for i in gate.items}
    if snap.checks is not None:
        for pipeline in snap.check_pipelines:
            out[(pipeline, pipeline)] = {c.workflow_id: c.started for c in snap.checks
                                         if c.pipeline == pipeline}
    return out


class Departures:
    """Items seen in one snapshot and gone in the next left their queue (merged, failed,
    dequeued, check done): their resident time is from entering to the later snapshot (so
    precise to the scrape interval)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], Items] = {}

    def update(self, snap: Snapshot) -> list[tuple[str, str, float]]:
        """(pipeline, queue, resident seconds) of every item gone since the last snapshot."""
        gone: list[tuple[str, str, float]] = []
        for where, items in queue_items(snap).items():
            before = self._seen.get(where, {})
            for key, entered in before.items():
                if key not in items:
                    gone.append((where[0], where[1], max(snap.taken - entered, 0.0)))
            self._seen[where] = items
        return gone
