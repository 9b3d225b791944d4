"""The node pool's data: nodes, node requests, holds, and what pools report.

Shared by the pool workflow (which decides), the launcher activities (which talk to clouds) and
the executor (which asks for nodes and gives them back). Nothing here carries a secret: nodes
name the provider whose configuration holds the SSH key, never the key.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from lockmaster.model.base import Model
from lockmaster.model.work import StuckView, Work

# Node requests are served in this order first (gate before check before post).
PRECEDENCE = {"high": 0, "normal": 1, "low": 2}


class NodeState(StrEnum):
    BUILDING = "building"  # launching: server created, waiting for ACTIVE and SSH
    READY = "ready"  # may be handed to a request
    IN_USE = "in-use"  # held by a request's holder (a build)
    DELETING = "deleting"  # used, expired or unwanted: being deleted
    HOLD = "hold"  # kept for debugging until `hold_until`
    FAILED = "failed"  # launch failed: deleting what was created


class Driver(StrEnum):
    OPENSTACK = "openstack"  # single-use servers, launched and deleted by the pool
    STATIC = "static"  # slots on existing hosts, back to ready after each job
    LOCAL = "local"  # slots on the executor's machine (development)


class Node(Model):
    id: str  # unique in its pool, e.g. "0000000042" or "host1-0"
    provider: str
    pool: str
    driver: Driver
    labels: list[str]  # what it can serve (one label for cloud nodes; several for slots)
    label: str | None = None  # what it serves now (set when assigned)
    state: NodeState = NodeState.BUILDING
    state_since: float = 0.0
    # The request it was launched for or is assigned to.
    request_id: str | None = None
    launch_attempt: int = 0
    external_id: str | None = None  # the cloud's server id
    host: str | None = None
    port: int = 22
    username: str | None = None
    host_key: str | None = None  # as in known_hosts, recorded when SSH first answered
    static_node: str | None = None  # the static host's configured name
    floating_ip_id: str | None = None
    hold_until: float | None = None
    hold_reason: str | None = None
    held_by: str | None = None  # the operator who held it (`nodes hold --user`)
    cores: int = 0
    ram: int = 0  # MiB


class RequestState(StrEnum):
    PENDING = "pending"
    FULFILLED = "fulfilled"
    DECLINED = "declined"  # this pool cannot serve it: try another
    GONE = "gone"  # unknown to this pool (returned, expired, never seen)


class NodeRequest(Model):
    """Ask one pool for a whole nodeset. `id` is chosen by the requester and makes asking again
    (a retried call) idempotent."""

    id: str
    labels: list[str]
    precedence: int = 1  # PRECEDENCE values: lower first
    position: int = 0  # queue position within the pipeline: lower first
    holder: str = ""  # who asks (for operators): build id, workflow id
    # Pending and fulfilled requests must be renewed within this; otherwise they are dropped and
    # their nodes deleted (the holder is gone).
    lease_seconds: float = 120.0
    # Set by the pool when it takes the request; a requester may give an earlier time (a retried
    # build asking again keeps its first try's place), never a later one.
    arrived: float = 0.0
    lease_until: float = 0.0
    state: RequestState = RequestState.PENDING
    nodes: list[str] = Field(default_factory=list)  # node ids, in `labels` order once fulfilled
    reason: str | None = None  # why declined


class NodeRequestStatus(Model):
    id: str
    state: RequestState
    nodes: list[Node] = Field(default_factory=list)
    reason: str | None = None


class RequestStatusQuery(Model):
    id: str


class RenewRequests(Model):
    ids: list[str]


class ReturnNodes(Model):
    """Give a request's nodes back (or withdraw a pending request). `hold_until` keeps them for
    debugging instead of deleting them (autohold)."""

    request_id: str
    hold_until: float | None = None
    hold_reason: str | None = None


class HoldNode(Model):
    node_id: str
    hold_until: float
    reason: str = "held by an operator"
    by: str | None = None  # the operator (model/audit.py)


class DeleteNode(Model):
    node_id: str
    by: str | None = None  # the operator, and why (model/audit.py)
    reason: str | None = None


class SetEnabled(Model):
    enabled: bool
    reason: str = ""
    by: str | None = None  # the operator (model/audit.py)


class OperatorResult(Model):
    ok: bool
    message: str


class PoolStatusQuery(Model):
    pass


class PoolStatus(Model):
    provider: str
    pool: str
    driver: Driver
    enabled: bool
    max_servers: int | None
    nodes: list[Node]
    requests: list[NodeRequest]
    # Quota backoff: no launches before this (epoch seconds), after the cloud said "quota".
    paused_until: float | None = None
    leak_suspects: list[str] = Field(default_factory=list)
    launches: int = 0
    launch_failures: int = 0
    leaks_deleted: int = 0
    # Work that keeps failing and is retried until it succeeds (see model/work.py).
    stuck: list[StuckView] = Field(default_factory=list)
    # Disabled: why, and by whom (an operator's `nodes disable`).
    disabled_reason: str = ""
    disabled_by: str | None = None


# --- the pool workflow's input: what it serves (from the configuration) and its state ---------


class LabelSpec(Model):
    name: str
    min_ready: int = 0  # kept booted by this pool (only one pool keeps a label's min-ready)
    # Cloud labels:
    image: str | None = None
    flavor: str | None = None
    key_name: str | None = None
    username: str = "lockmaster"
    port: int = 22
    boot_from_volume: bool = False
    volume_size: int | None = None
    cores: int = 0  # from the flavor, once the launcher has looked it up
    ram: int = 0


class SlotSpec(Model):
    """A static host's slot or a local slot: always there, never launched nor deleted."""

    node_id: str
    labels: list[str]
    static_node: str | None = None
    host: str | None = None
    port: int = 22
    username: str | None = None
    host_key: str | None = None


class PoolSpec(Model):
    provider: str
    pool: str
    driver: Driver
    labels: dict[str, LabelSpec]
    slots: list[SlotSpec] = Field(default_factory=list)
    # Cloud pools:
    cloud: str | None = None
    region: str | None = None
    clouds_file: str | None = None
    max_servers: int | None = None
    max_cores: int | None = None
    max_ram: int | None = None
    networks: list[str] = Field(default_factory=list)
    floating_ip_network: str | None = None
    launch_timeout: float = 3600.0  # to ACTIVE
    boot_timeout: float = 120.0  # then to SSH answering
    launch_attempts: int = 3
    cleanup_interval: float = 60.0
    quota_backoff: float = 10.0
    heartbeat_timeout: float = 30.0


class CloudHeadroom(Model):
    """What the cloud itself still allows this pool (its limits minus what others use)."""

    servers: int | None = None
    cores: int | None = None
    ram: int | None = None


class PoolState(Model):
    enabled: bool = True
    disabled_reason: str = ""
    disabled_by: str | None = None
    nodes: dict[str, Node] = Field(default_factory=dict)
    requests: dict[str, NodeRequest] = Field(default_factory=dict)
    next_node: int = 1
    paused_until: float | None = None
    # Labels whose min-ready launches failed: no new min-ready launch before this time.
    label_backoff: dict[str, float] = Field(default_factory=dict)
    # Cloud resources carrying our marks but unknown to the pool, seen on the last pass.
    leak_suspects: list[str] = Field(default_factory=list)
    fip_suspects: list[str] = Field(default_factory=list)
    headroom: CloudHeadroom = Field(default_factory=CloudHeadroom)
    last_cleanup: float = 0.0
    launches: int = 0
    launch_failures: int = 0
    leaks_deleted: int = 0


class PoolInput(Model):
    spec: PoolSpec
    state: PoolState = Field(default_factory=PoolState)
    task_queue_prefix: str = "lockmaster"
    # Continue-as-new past this many history events (tests force it low); else when suggested.
    max_history_events: int | None = None
    # Launches in flight (detached: they outlive the run), by key.
    work: dict[str, Work] = Field(default_factory=dict)


# --- launcher activities ----------------------------------------------------------------------


class LaunchRequest(Model):
    spec: PoolSpec
    node: Node


class LaunchResult(Model):
    node_id: str
    ok: bool
    quota: bool = False  # refused for quota: not a failed attempt
    error: str | None = None
    external_id: str | None = None
    host: str | None = None
    port: int = 22
    host_key: str | None = None
    floating_ip_id: str | None = None


class DeleteServerRequest(Model):
    spec: PoolSpec
    node_id: str | None = None
    external_id: str | None = None
    floating_ip_id: str | None = None
    # Without an external id (the launch never reported one), find it by name.
    server_name: str | None = None


class DeleteServerResult(Model):
    ok: bool
    error: str | None = None


class CloudServerMark(Model):
    """A server or floating IP carrying our marks."""

    id: str
    node_id: str
    attempt: int = 0


class ScanRequest(Model):
    spec: PoolSpec


class ScanResult(Model):
    servers: list[CloudServerMark] = Field(default_factory=list)
    floating_ips: list[CloudServerMark] = Field(default_factory=list)
    headroom: CloudHeadroom = Field(default_factory=CloudHeadroom)
    # Flavor sizes by label (cores, ram), so quotas on cores and RAM can be kept.
    label_sizes: dict[str, tuple[int, int]] = Field(default_factory=dict)
    error: str | None = None


class Autohold(Model):
    id: str
    project: str
    job: str
    change: int | None = None  # any change when unset
    reason: str
    count: int = 1  # how many failing builds still to hold
    hold_seconds: float = 20 * 24 * 3600.0  # the seed keeps VM snapshots for 20 days
    created: float = 0.0
    by: str | None = None  # the operator who asked for it (model/audit.py)


class AutoholdClaim(Model):
    project: str
    job: str
    change: int


class AutoholdClaimResult(Model):
    held: bool
    hold_until: float | None = None
    reason: str | None = None


class AutoholdList(Model):
    autoholds: list[Autohold]


class AutoholdDelete(Model):
    id: str


class AutoholdListQuery(Model):
    pass


class AutoholdInput(Model):
    autoholds: list[Autohold] = Field(default_factory=list)
    next_id: int = 1
    max_history_events: int | None = None


class NodeRequestStatuses(Model):
    """The `request_statuses` query's answer: the status of each asked request."""

    statuses: list[NodeRequestStatus]
