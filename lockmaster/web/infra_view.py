"""The views of /api/nodes, /api/tes and /api/publications (pure, from the node pools', TE
brokers' and publish workflows' `status` answers; documented in docs/web.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lockmaster.leases.broker import lease_order
from lockmaster.model.nodes import Driver, NodeState, PoolSpec, PoolStatus, RequestState
from lockmaster.model.publish import PublishStatus
from lockmaster.model.publish import QueueStatus as PublishQueueStatus
from lockmaster.model.testenv import BrokerStatus, TEState
from lockmaster.nodepool.allocator import request_order

Json = dict[str, Any]


def _servers_used(pool: PoolStatus) -> int:
    """Against max-servers: a cloud's servers all count (ready ones too); a static or local
    pool's nodes are its slots, so the taken ones count."""
    if pool.driver is Driver.OPENSTACK:
        return len(pool.nodes)
    return sum(1 for n in pool.nodes if n.state in (NodeState.IN_USE, NodeState.HOLD))


def nodes_view(pools: Sequence[PoolStatus], specs: Sequence[PoolSpec],
               errors: Mapping[str, str], now: float) -> Json:
    """Each pool: nodes by state against its quota (max-servers, cores, RAM), its nodes and its
    waiting requests in the order they are served."""
    by_key = {f"{s.provider}/{s.pool}": s for s in specs}
    out = []
    for pool in pools:
        key = f"{pool.provider}/{pool.pool}"
        spec = by_key.get(key)
        counts = {state.value: 0 for state in NodeState}
        for node in pool.nodes:
            counts[node.state.value] += 1
        pending = sorted((r for r in pool.requests if r.state is RequestState.PENDING),
                         key=request_order)
        out.append({
            "pool": key, "provider": pool.provider, "name": pool.pool,
            "driver": pool.driver.value, "enabled": pool.enabled,
            "disabled_reason": pool.disabled_reason or None, "disabled_by": pool.disabled_by,
            "quota": {"max_servers": pool.max_servers,
                      "max_cores": spec.max_cores if spec else None,
                      "max_ram": spec.max_ram if spec else None},
            "used": {"servers": _servers_used(pool), "cores": sum(n.cores for n in pool.nodes),
                     "ram": sum(n.ram for n in pool.nodes)},
            "by_state": counts,
            "nodes": [{"id": n.id, "label": n.label or "/".join(n.labels),
                       "state": n.state.value, "since": n.state_since, "host": n.host,
                       "hold_until": n.hold_until, "hold_reason": n.hold_reason,
                       "held_by": n.held_by} for n in sorted(pool.nodes, key=lambda n: n.id)],
            "requests": [{"id": r.id, "holder": r.holder, "labels": list(r.labels),
                          "position": i, "waiting": max(0.0, now - r.arrived)}
                         for i, r in enumerate(pending)],
            "paused_until": pool.paused_until if pool.paused_until and
            pool.paused_until > now else None,
            "launches": pool.launches, "launch_failures": pool.launch_failures,
            "stuck": [{"what": s.what, "since": s.since, "failures": s.failures,
                       "error": s.error} for s in pool.stuck],
        })
    return {"generated_at": now, "pools": out,
            "unanswered": [{"pool": k, "error": v} for k, v in sorted(errors.items())]}


def tes_view(brokers: Sequence[BrokerStatus], errors: Mapping[str, str], now: float) -> Json:
    """Each TE label's broker: its TEs by state, the leases held and the queue of waiters."""
    out = []
    for broker in brokers:
        counts = {state.value: 0 for state in TEState}
        for te in broker.tes:
            counts[te.state.value] += 1
        waiting = sorted(broker.waiting, key=lease_order)
        out.append({
            "label": broker.label, "by_state": counts,
            "tes": [{"te": t.key, "host": t.host, "name": t.name, "state": t.state.value,
                     "generation": t.generation, "holder": t.holder, "lease": t.lease_id,
                     "expires": t.expires, "reason": t.reason,
                     "operator": t.operator.describe(t.operator_action or "acted on")
                     if t.operator else None} for t in broker.tes],
            "queue": [{"lease": w.id, "holder": w.holder, "position": i,
                       "precedence": w.precedence, "waiting": max(0.0, now - w.arrived)}
                      for i, w in enumerate(waiting)],
            "draining_hosts": list(broker.draining_hosts),
            "stuck": [{"what": s.what, "since": s.since, "failures": s.failures,
                       "error": s.error} for s in broker.stuck],
        })
    return {"generated_at": now, "brokers": out,
            "unanswered": [{"label": k, "error": v} for k, v in sorted(errors.items())]}


def publications_view(queue: PublishQueueStatus | None,
                      recent: Sequence[tuple[str, PublishStatus | str]], now: float) -> Json:
    """The publish queue, and the recent publications with their steps (build, publish, one
    sync per mirror), newest first."""
    entries = sorted(queue.entries, key=lambda e: e.sequence) if queue else []
    by_id = {e.workflow_id: e for e in entries}
    pubs = []
    for workflow_id, status in reversed(list(recent)):
        entry = by_id.get(workflow_id)
        row: Json = {"workflow_id": workflow_id, "change": entry.change if entry else None,
                     "sequence": entry.sequence if entry else None,
                     "queue_state": entry.state.value if entry else None}
        if isinstance(status, str):
            row.update(error=status, steps=[], syncs=[], snapshot=None, done=None)
        else:
            steps = [{"name": s.name, "state": s.state.value, "detail": s.detail,
                      "started": s.started, "ended": s.ended, "attempts": s.attempts,
                      "url": s.url} for s in status.steps]
            row.update(error=None, project=status.change.project,
                       number=status.change.number, snapshot=status.snapshot,
                       done=status.done, steps=steps,
                       syncs=[s for s in steps if s["name"].startswith("sync:")])
        pubs.append(row)
    return {"generated_at": now, "repository": queue.repository if queue else None,
            "queue": [{"workflow_id": e.workflow_id, "change": e.change,
                       "state": e.state.value, "sequence": e.sequence,
                       "snapshot": e.snapshot, "detail": e.detail} for e in entries],
            "recent": pubs}
