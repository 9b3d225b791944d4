"""One node pool's decisions, as pure functions of its spec, its state and the time.

The pool workflow feeds every event in (requests, launch outcomes, returns, cleanup scans) and
carries out the actions that come back. Nothing here does I/O or reads a clock, so it is tested
without Temporal and replays deterministically.

Rules (Nodepool's, as far as one pool is concerned):
- pending requests are served in order of precedence (gate, check, post), then queue position,
  then arrival; a request is fulfilled as a whole, with ready nodes only;
- a request takes ready nodes first, then nodes already booting, and only then launches, while
  the pool's limits (servers, cores, RAM, and what the cloud itself still allows) permit; once a
  request cannot get what it needs, no launches are made for requests behind it, so capacity
  goes in priority order;
- `min-ready` nodes are kept booted per label beyond what requests need;
- requests the pool can never serve (unknown label, more nodes than `max-servers`, disabled
  provider, launches that kept failing) are declined so another pool can take them;
- cloud nodes are single use: returned, expired or unwanted nodes are deleted; static and local
  slots go back to ready.
"""

from __future__ import annotations

from dataclasses import dataclass

from lockmaster.model.audit import attributed
from lockmaster.model.nodes import (
    CloudServerMark,
    Driver,
    Node,
    NodeRequest,
    NodeState,
    PoolSpec,
    PoolState,
    RequestState,
    ReturnNodes,
    SlotSpec,
)


@dataclass(frozen=True)
class Launch:
    node_id: str


@dataclass(frozen=True)
class Delete:
    node_id: str


@dataclass(frozen=True)
class DeleteLeak:
    """A server or floating IP with our marks that no pool knows: delete it."""

    server_id: str | None = None
    floating_ip_id: str | None = None


Action = Launch | Delete | DeleteLeak

# Nodes that occupy cloud resources (count against limits).
_EXISTING = (NodeState.BUILDING, NodeState.READY, NodeState.IN_USE, NodeState.DELETING,
             NodeState.HOLD, NodeState.FAILED)


def single_use(spec: PoolSpec) -> bool:
    return spec.driver is Driver.OPENSTACK


def slot_node(spec: PoolSpec, slot: SlotSpec) -> Node:
    return Node(
        id=slot.node_id, provider=spec.provider, pool=spec.pool, driver=spec.driver,
        labels=list(slot.labels), state=NodeState.READY, static_node=slot.static_node,
        host=slot.host, port=slot.port, username=slot.username, host_key=slot.host_key,
    )


def sync_slots(spec: PoolSpec, state: PoolState) -> None:
    """Static and local pools: one node per configured slot. Slots no longer configured go when
    they are not in use; new ones appear ready; changed ones take the new details."""
    if single_use(spec):
        return
    wanted = {slot.node_id: slot for slot in spec.slots}
    for node_id in list(state.nodes):
        node = state.nodes[node_id]
        if node_id not in wanted and node.state is not NodeState.IN_USE:
            del state.nodes[node_id]
    for node_id, slot in wanted.items():
        fresh = slot_node(spec, slot)
        node = state.nodes.get(node_id)
        if node is None:
            state.nodes[node_id] = fresh
        else:
            state.nodes[node_id] = node.model_copy(update={
                "labels": fresh.labels, "host": fresh.host, "port": fresh.port,
                "username": fresh.username, "host_key": fresh.host_key,
                "static_node": fresh.static_node,
            })


def never_serves(spec: PoolSpec, state: PoolState, labels: list[str]) -> str | None:
    """Why this pool can never fulfil a nodeset, or None."""
    if not labels:
        return "the request names no labels"
    unknown = sorted({label for label in labels if label not in spec.labels})
    if unknown:
        return (f"pool {spec.provider}/{spec.pool} does not serve label(s) "
                f"{', '.join(unknown)}")
    if not state.enabled:
        said = attributed(state.disabled_reason or None, state.disabled_by)
        why = f": {said}" if said else ""
        return f"provider {spec.provider} is disabled{why}"
    if single_use(spec):
        limit = _limit(spec.max_servers, state.headroom.servers)
        if limit is not None and len(labels) > limit:
            return (f"the nodeset needs {len(labels)} nodes; pool {spec.provider}/{spec.pool} "
                    f"may have at most {limit}")
    else:
        slots = [n for n in state.nodes.values()]
        if len(labels) > len(slots):
            return (f"the nodeset needs {len(labels)} nodes; pool {spec.provider}/{spec.pool} "
                    f"has {len(slots)} slots")
        for label in set(labels):
            serving = [n for n in slots if label in n.labels]
            if labels.count(label) > len(serving):
                return (f"the nodeset needs {labels.count(label)} {label!r} nodes; pool "
                        f"{spec.provider}/{spec.pool} has {len(serving)}")
    return None


def _limit(configured: int | None, cloud: int | None) -> int | None:
    values = [v for v in (configured, cloud) if v is not None]
    return min(values) if values else None


class _Usage:
    """What the pool's nodes occupy, against its limits."""

    def __init__(self, spec: PoolSpec, state: PoolState) -> None:
        self.spec = spec
        existing = [n for n in state.nodes.values() if n.state in _EXISTING]
        self.servers = len(existing)
        self.cores = sum(n.cores for n in existing)
        self.ram = sum(n.ram for n in existing)
        self.max_servers = _limit(spec.max_servers, state.headroom.servers)
        self.max_cores = _limit(spec.max_cores, state.headroom.cores)
        self.max_ram = _limit(spec.max_ram, state.headroom.ram)

    def fits(self, label: str) -> bool:
        size = self.spec.labels[label]
        return (
            (self.max_servers is None or self.servers + 1 <= self.max_servers)
            and (self.max_cores is None or self.cores + size.cores <= self.max_cores)
            and (self.max_ram is None or self.ram + size.ram <= self.max_ram)
        )

    def add(self, label: str) -> None:
        size = self.spec.labels[label]
        self.servers += 1
        self.cores += size.cores
        self.ram += size.ram


def request_order(request: NodeRequest) -> tuple[int, int, float, str]:
    return (request.precedence, request.position, request.arrived, request.id)


class Allocator:
    """Applies events to a pool's state and says what to do next."""

    def __init__(self, spec: PoolSpec, state: PoolState) -> None:
        self.spec = spec
        self.state = state

    # --- events --------------------------------------------------------------------------------

    def submit(self, request: NodeRequest, now: float) -> NodeRequest:
        """Take a request (idempotent by id). Declined at once when this pool can never serve it."""
        known = self.state.requests.get(request.id)
        if known is not None:
            known.lease_until = max(known.lease_until, now + known.lease_seconds)
            return known
        reason = never_serves(self.spec, self.state, request.labels)
        arrived = min(request.arrived, now) if request.arrived > 0 else now
        request = request.model_copy(update={
            "arrived": arrived, "lease_until": now + request.lease_seconds, "nodes": [],
            "state": RequestState.DECLINED if reason else RequestState.PENDING, "reason": reason,
        })
        if reason is None:
            self.state.requests[request.id] = request
        return request

    def renew(self, ids: list[str], now: float) -> None:
        for request_id in ids:
            request = self.state.requests.get(request_id)
            if request is not None:
                request.lease_until = max(request.lease_until, now + request.lease_seconds)

    def give_back(self, ret: ReturnNodes, now: float) -> list[Action]:
        request = self.state.requests.pop(ret.request_id, None)
        if request is None:
            return []
        self._orphan_launches(request.id)
        actions: list[Action] = []
        for node_id in request.nodes:
            node = self.state.nodes.get(node_id)
            if node is None or node.request_id != request.id:
                continue
            hold_until = ret.hold_until or node.hold_until
            if hold_until is not None and hold_until > now:
                node.state, node.state_since = NodeState.HOLD, now
                node.hold_until = hold_until
                node.hold_reason = ret.hold_reason or node.hold_reason or "held"
                continue
            actions += self._used(node, now)
        return actions

    def launched(self, node_id: str, *, external_id: str | None, host: str | None, port: int,
                 host_key: str | None, floating_ip_id: str | None, now: float) -> list[Action]:
        node = self.state.nodes.get(node_id)
        if node is None or node.state is not NodeState.BUILDING:
            # Deleted (or its request withdrawn and the node deleted) while it booted.
            if node is None and external_id:
                return [DeleteLeak(server_id=external_id, floating_ip_id=floating_ip_id)]
            return []
        node.external_id, node.host, node.port = external_id, host, port
        node.host_key, node.floating_ip_id = host_key, floating_ip_id
        node.state, node.state_since = NodeState.READY, now
        self.state.launches += 1
        return []

    def launch_failed(self, node_id: str, *, quota: bool, error: str, now: float) -> list[Action]:
        """The launcher already deleted what it created for this attempt."""
        node = self.state.nodes.get(node_id)
        if node is None or node.state is not NodeState.BUILDING:
            return []
        if quota:
            # Not a failed attempt: the cloud is full. Stop launching for a while; the node's
            # request keeps its place and gets a new launch when the pause ends.
            del self.state.nodes[node_id]
            self.state.paused_until = now + self.spec.quota_backoff
            return []
        node.launch_attempt += 1
        if node.launch_attempt < self.spec.launch_attempts:
            return [Launch(node_id)]
        del self.state.nodes[node_id]
        self.state.launch_failures += 1
        label = node.labels[0]
        request = self.state.requests.get(node.request_id or "")
        if request is not None and request.state is RequestState.PENDING:
            self._decline(request, f"launching a {label!r} node failed "
                                   f"{self.spec.launch_attempts} times: {error}")
        else:
            self.state.label_backoff[label] = now + 30.0
        return []

    def deleted(self, node_id: str) -> None:
        node = self.state.nodes.get(node_id)
        if node is not None and node.state in (NodeState.DELETING, NodeState.FAILED):
            del self.state.nodes[node_id]

    def set_enabled(self, enabled: bool, reason: str, by: str | None = None) -> None:
        """`by`: the operator who disabled it (kept while disabled)."""
        self.state.enabled = enabled
        self.state.disabled_reason = "" if enabled else reason
        self.state.disabled_by = None if enabled else by

    def hold(self, node_id: str, until: float, reason: str, now: float,
             by: str | None = None) -> str | None:
        """Keep a node for debugging (`by`: the operator). Returns an error, or None."""
        node = self.state.nodes.get(node_id)
        if node is None:
            return f"no node {node_id!r} in pool {self.spec.provider}/{self.spec.pool}"
        if node.state in (NodeState.DELETING, NodeState.FAILED, NodeState.BUILDING):
            return f"node {node_id} is {node.state.value}; only ready, in-use or held nodes " \
                   "can be held"
        if not single_use(self.spec):
            return f"node {node_id} is a {node.driver.value} slot; slots cannot be held"
        node.hold_until, node.hold_reason, node.held_by = until, reason, by
        if node.state is NodeState.READY:
            node.state, node.state_since = NodeState.HOLD, now
        return None

    def delete(self, node_id: str, now: float) -> tuple[str | None, list[Action]]:
        node = self.state.nodes.get(node_id)
        if node is None:
            return f"no node {node_id!r} in pool {self.spec.provider}/{self.spec.pool}", []
        if not single_use(self.spec):
            return (f"node {node_id} is a {node.driver.value} slot: slots are not deleted "
                    "(disable the provider or change its configuration)"), []
        if node.state is NodeState.DELETING:
            return None, []
        if node.request_id is not None:
            request = self.state.requests.get(node.request_id)
            if request is not None and request.state is RequestState.PENDING:
                pass  # it only booted for the request: the request launches another
            elif request is not None:
                # The holder loses the node; its job sees the node go away.
                self.state.requests.pop(request.id, None)
        return None, self._used(node, now, force_delete=True)

    # --- the periodic decisions ----------------------------------------------------------------

    def process(self, now: float) -> list[Action]:
        actions: list[Action] = []
        actions += self._expire(now)
        if not self.state.enabled:
            actions += self._drain()
            return actions
        actions += self._serve(now)
        return actions

    def next_deadline(self) -> float | None:
        """When `process` must run again even if nothing happens."""
        times: list[float] = []
        for request in self.state.requests.values():
            times.append(request.lease_until)
        for node in self.state.nodes.values():
            if node.state is NodeState.HOLD and node.hold_until is not None:
                times.append(node.hold_until)
        if self.state.paused_until is not None:
            times.append(self.state.paused_until)
        times += self.state.label_backoff.values()
        return min(times) if times else None

    def scan(self, servers: list[CloudServerMark], fips: list[CloudServerMark]) -> list[Action]:
        """Leak cleanup: what carries our marks but is unknown, on two consecutive passes."""
        actions: list[Action] = []
        unknown_servers = [s.id for s in servers if not self._knows_server(s)]
        unknown_fips = [f.id for f in fips if not self._knows_fip(f)]
        for server_id in unknown_servers:
            if server_id in self.state.leak_suspects:
                actions.append(DeleteLeak(server_id=server_id))
        for fip_id in unknown_fips:
            if fip_id in self.state.fip_suspects:
                actions.append(DeleteLeak(floating_ip_id=fip_id))
        self.state.leaks_deleted += len(actions)
        self.state.leak_suspects = [s for s in unknown_servers
                                    if s not in self.state.leak_suspects]
        self.state.fip_suspects = [f for f in unknown_fips if f not in self.state.fip_suspects]
        return actions

    # --- internals -----------------------------------------------------------------------------

    def _knows_server(self, server: CloudServerMark) -> bool:
        node = self.state.nodes.get(server.node_id)
        if node is None:
            return False
        if node.external_id == server.id:
            return True
        # A launch in flight (its result not in yet) may be creating or adopting this server.
        return node.state is NodeState.BUILDING and server.attempt == node.launch_attempt

    def _knows_fip(self, fip: CloudServerMark) -> bool:
        node = self.state.nodes.get(fip.node_id)
        if node is None:
            return False
        return node.floating_ip_id == fip.id or node.state is NodeState.BUILDING

    def _used(self, node: Node, now: float, force_delete: bool = False) -> list[Action]:
        """A node its holder is done with: cloud nodes are deleted, slots are ready again."""
        node.request_id, node.label = None, None
        node.hold_until, node.hold_reason, node.held_by = None, None, None
        if single_use(self.spec) or force_delete:
            node.state, node.state_since = NodeState.DELETING, now
            return [Delete(node.id)]
        node.state, node.state_since = NodeState.READY, now
        return []

    def _decline(self, request: NodeRequest, reason: str) -> None:
        request.state, request.reason = RequestState.DECLINED, reason
        self._orphan_launches(request.id)

    def _orphan_launches(self, request_id: str) -> None:
        """Nodes launched for a request that will not take them serve whoever comes next."""
        for node in self.state.nodes.values():
            if node.request_id == request_id and node.state in (NodeState.BUILDING,
                                                                NodeState.READY):
                node.request_id = None

    def _expire(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for request in list(self.state.requests.values()):
            if request.lease_until > now:
                continue
            # The holder stopped renewing: it is gone. Its nodes are not to be trusted.
            del self.state.requests[request.id]
            if request.state is not RequestState.FULFILLED:
                self._orphan_launches(request.id)
                continue
            for node_id in request.nodes:
                node = self.state.nodes.get(node_id)
                if node is not None and node.request_id == request.id:
                    actions += self._used(node, now)
        for node in list(self.state.nodes.values()):
            if (node.state is NodeState.HOLD and node.hold_until is not None
                    and node.hold_until <= now):
                actions += self._used(node, now)
        if self.state.paused_until is not None and self.state.paused_until <= now:
            self.state.paused_until = None
        for label, until in list(self.state.label_backoff.items()):
            if until <= now:
                del self.state.label_backoff[label]
        return actions

    def _drain(self) -> list[Action]:
        """Disabled: decline what waits, delete idle cloud nodes, let nodes in use finish."""
        actions: list[Action] = []
        for request in self.state.requests.values():
            if request.state is RequestState.PENDING:
                self._decline(request, never_serves(self.spec, self.state, request.labels)
                              or "disabled")
        if single_use(self.spec):
            for node in list(self.state.nodes.values()):
                if node.state is NodeState.READY and node.request_id is None:
                    node.state = NodeState.DELETING
                    actions.append(Delete(node.id))
        return actions

    def _serve(self, now: float) -> list[Action]:
        actions: list[Action] = []
        usage = _Usage(self.spec, self.state)
        launching = single_use(self.spec) and self.state.paused_until is None
        claimed: set[str] = set()
        pending = sorted((r for r in self.state.requests.values()
                          if r.state is RequestState.PENDING), key=request_order)
        for request in pending:
            picks: list[Node] = []
            complete = True
            for label in request.labels:
                node = self._pick(label, request.id, claimed)
                if node is None and launching and usage.fits(label):
                    node = self._new_node(label, request.id, now)
                    usage.add(label)
                    actions.append(Launch(node.id))
                if node is None:
                    complete = False
                    break
                claimed.add(node.id)
                picks.append(node)
            if not complete:
                # Capacity goes in priority order: nothing is launched for those behind.
                launching = False
                continue
            if all(n.state is NodeState.READY for n in picks):
                for node, label in zip(picks, request.labels, strict=True):
                    node.state, node.state_since = NodeState.IN_USE, now
                    node.request_id, node.label = request.id, label
                request.state = RequestState.FULFILLED
                request.nodes = [n.id for n in picks]
        if launching:
            actions += self._min_ready(usage, claimed, now)
        return actions

    def _pick(self, label: str, request_id: str, claimed: set[str]) -> Node | None:
        """Ready nodes first (its own launches, then the oldest), then nodes still booting."""
        free = [n for n in self.state.nodes.values()
                if n.id not in claimed and label in n.labels
                and n.state in (NodeState.READY, NodeState.BUILDING)
                and n.request_id in (None, request_id)]

        def rank(node: Node) -> tuple[int, int, float, str]:
            return (0 if node.state is NodeState.READY else 1,
                    0 if node.request_id == request_id else 1, node.state_since, node.id)

        return min(free, key=rank) if free else None

    def _new_node(self, label: str, request_id: str | None, now: float) -> Node:
        node_id = f"{self.state.next_node:010d}"
        self.state.next_node += 1
        size = self.spec.labels[label]
        node = Node(
            id=node_id, provider=self.spec.provider, pool=self.spec.pool,
            driver=self.spec.driver, labels=[label], state=NodeState.BUILDING, state_since=now,
            request_id=request_id, username=size.username, port=size.port,
            cores=size.cores, ram=size.ram,
        )
        self.state.nodes[node_id] = node
        return node

    def _min_ready(self, usage: _Usage, claimed: set[str], now: float) -> list[Action]:
        actions: list[Action] = []
        for label, size in self.spec.labels.items():
            if size.min_ready <= 0 or label in self.state.label_backoff:
                continue
            spare = [n for n in self.state.nodes.values()
                     if n.id not in claimed and n.labels == [label] and n.request_id is None
                     and n.state in (NodeState.READY, NodeState.BUILDING)]
            for _ in range(size.min_ready - len(spare)):
                if not usage.fits(label):
                    break
                node = self._new_node(label, None, now)
                usage.add(label)
                actions.append(Launch(node.id))
        return actions
