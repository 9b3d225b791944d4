"""Test environments (TEs) and their leases: shared by the broker workflow, the TE-host
activities and the holders (jobs, people).

The holder's access key never travels through Temporal: a holder makes its own SSH key pair and
sends only the public half with its lease request; the TE host accepts that key (with a forced
command) for exactly as long as the lease lasts. The private half stays with the holder, who
writes it into its own copy of the TE description (`TE_DATAFILE`).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from lockmaster.model.audit import OperatorNote
from lockmaster.model.base import Model
from lockmaster.model.work import StuckView, Work

# Lease requests are served by precedence first (gate before check), FIFO within one.
PRECEDENCE = {"high": 0, "normal": 1, "low": 2}


class TENode(Model):
    """A "baremetal" VM of a TE."""

    name: str  # libvirt domain, e.g. baremetalbrbm2_1
    mac: str
    cpu: int = 1
    memory: int = 2048  # MiB
    disk: int = 20  # GiB
    arch: str = "x86_64"


class TENetwork(Model):
    cidr: str
    gateway: str
    range_start: str
    range_end: str


class TESpec(Model):
    """One TE as configured: where it lives and what it is made of (no secrets)."""

    host: str  # the TE host's name in the configuration
    name: str  # e.g. "te1"
    env_number: int
    libvirt_uri: str
    host_address: str  # SSH address of the TE host, for the holder
    host_port: int = 22
    host_key: str  # the TE host's SSH host key ("ssh-ed25519 AAAA..."), given to holders
    ssh_user: str  # the restricted account holders log in as
    seed: TENode  # the seed VM: first NIC on the shared bridge, second on the TE's own
    seed_ip: str
    seed_route_dev: str = "eth1"
    nodes: list[TENode]
    public_bridge: str = "br-ctlplane"
    bridge: str  # the TE's own bridge (libvirt network), e.g. brbm1
    network: TENetwork
    labels: list[str] = Field(default_factory=lambda: ["default"])

    @property
    def key(self) -> str:
        return f"{self.host}/{self.name}"

    def domains(self) -> list[str]:
        return [self.seed.name, *(n.name for n in self.nodes)]


class TEState(StrEnum):
    AVAILABLE = "available"
    LEASED = "leased"
    RESETTING = "resetting"  # released or expired: being reset before anyone gets it
    QUARANTINED = "quarantined"  # its reset failed: kept from everyone until an operator acts
    DRAINING = "draining"  # its host is being drained: not handed out once free


# --- TE-host activities (task queue `te-host/<host>`) -------------------------------------


class TEAuthorize(Model):
    """Accept `public_key` for this TE's lease `generation` (replacing any earlier key)."""

    te: TESpec
    generation: int
    public_key: str


class TERevoke(Model):
    te: TESpec
    generation: int  # keys of this generation or older stop working


class TEReset(Model):
    """Revoke access, destroy the TE's domains (never undefine them), restore their disks,
    check its bridges."""

    te: TESpec
    generation: int


class TEHostResult(Model):
    ok: bool
    error: str | None = None
    detail: str | None = None


# --- the broker (`te/<label>`) ---------------------------------------------------------------


class LeaseState(StrEnum):
    WAITING = "waiting"
    GRANTED = "granted"  # authorized on the TE host: the holder may use it
    ENDED = "ended"  # released, expired, force-released
    UNKNOWN = "unknown"  # never seen (a request signal not taken in yet)


class LeaseRequest(Model):
    """Ask for a TE. `id` is the requester's: asking again with it is idempotent. Waiting and
    granted requests must be renewed within `ttl` or they end."""

    id: str
    holder: str  # who (for operators): "check org/p 3,1 devtest", "alice@laptop"
    public_key: str  # the holder's own key; the TE host accepts it while the lease lasts
    ttl: float = Field(default=60.0, gt=0)
    precedence: int = 1


class Lease(Model):
    id: str
    holder: str
    public_key: str
    ttl: float
    precedence: int
    arrived: float
    expires: float
    state: LeaseState = LeaseState.WAITING
    te: str | None = None  # "host/name" once granted
    generation: int = 0  # the TE's generation this lease holds (fencing token)
    granted_at: float | None = None
    ended_why: str | None = None


class LeaseStatus(Model):
    id: str
    state: LeaseState
    te: TESpec | None = None
    generation: int = 0
    expires: float | None = None
    waited: float | None = None  # seconds from asking to the grant
    position: int | None = None  # place in the queue while waiting (0 = next)
    reason: str | None = None  # why ended or refused


class LeaseRef(Model):
    id: str
    generation: int = 0  # 0 while waiting; the granted generation after


class RenewLease(Model):
    id: str
    generation: int = 0
    ttl: float | None = None


class TEKey(Model):
    te: str  # "host/name"
    by: str | None = None  # the operator acting on it, and why (model/audit.py)
    reason: str | None = None


class HostRef(Model):
    host: str
    by: str | None = None  # the operator acting on it, and why (model/audit.py)
    reason: str | None = None


class TEView(Model):
    key: str
    host: str
    name: str
    state: TEState
    generation: int
    holder: str | None = None
    lease_id: str | None = None
    expires: float | None = None
    reason: str | None = None  # why quarantined
    # The last operator action on it (a force-release): who, when, why.
    operator: OperatorNote | None = None
    operator_action: str | None = None


class BrokerStatus(Model):
    label: str
    tes: list[TEView]
    waiting: list[Lease]
    draining_hosts: list[str]
    # Who drained each draining host, and why (hosts drained before this was kept: none).
    drained_by: dict[str, OperatorNote] = Field(default_factory=dict)
    # Resets whose TE host does not answer: retried until it does, shown here meanwhile.
    stuck: list[StuckView] = Field(default_factory=list)


class BrokerStatusQuery(Model):
    pass


class OperatorAnswer(Model):
    ok: bool
    message: str


class TERecord(Model):
    spec: TESpec
    state: TEState = TEState.RESETTING  # reset once before first use
    generation: int = 0
    lease_id: str | None = None
    reason: str | None = None
    # The last operator action on this TE ("force-released") and who did it, when and why.
    operator: OperatorNote | None = None
    operator_action: str | None = None


class BrokerState(Model):
    tes: dict[str, TERecord] = Field(default_factory=dict)
    leases: dict[str, Lease] = Field(default_factory=dict)  # waiting and granted
    ended: dict[str, str] = Field(default_factory=dict)  # recent ended lease ids -> why
    draining: list[str] = Field(default_factory=list)
    drained_by: dict[str, OperatorNote] = Field(default_factory=dict)  # host -> who, why


class BrokerInput(Model):
    label: str
    tes: list[TESpec]
    state: BrokerState = Field(default_factory=BrokerState)
    task_queue_prefix: str = "lockmaster"
    max_history_events: int | None = None
    # A TE host's worker that dies mid-reset is noticed within this; the reset runs again.
    reset_heartbeat_timeout: float = 30.0
    # Resets in flight (detached: they outlive the run and retry until the host answers).
    work: dict[str, Work] = Field(default_factory=dict)
    # A reset's round ends (and the TE shows stuck) when its host takes no task this long.
    reset_pickup_timeout: float = 120.0
    # A TE whose host is down is tried again after a pause doubling up to this (seconds).
    reset_retry_max: float = 300.0


class TEConfig(Model):
    tes: list[TESpec]


class LeaseStatuses(Model):
    """The `lease_statuses` query's answer: the status of each asked lease."""

    statuses: list[LeaseStatus]
