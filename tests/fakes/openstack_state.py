"""The fake OpenStack cloud's state, and the rules Nova applies to it (quota, boot, delete),
apart from HTTP. Tests script faults and read records through these methods; the HTTP layers
(openstack_compute.py, openstack_network.py, openstack_cloud.py) render it as the APIs do.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Json = dict[str, Any]

PROJECT_ID = "fakeproject"
NO_VALID_HOST = "No valid host was found. There are not enough hosts available."


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeHTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str = "badRequest") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind  # Nova's wrapper key: badRequest, forbidden, itemNotFound, computeFault


@dataclass
class FakeFlavor:
    id: str
    name: str
    vcpus: int
    ram: int  # MiB
    disk: int  # GiB


@dataclass
class FakeImage:
    id: str
    name: str


@dataclass
class FakeNetwork:
    id: str
    name: str
    external: bool
    subnet_id: str


@dataclass
class FakePort:
    id: str
    network_id: str
    device_id: str
    ip: str
    mac: str


@dataclass
class FakeFloatingIp:
    id: str
    address: str
    network_id: str
    description: str
    port_id: str | None = None


@dataclass
class FakeServer:
    id: str
    name: str
    flavor: FakeFlavor
    image_id: str | None  # None when booted from a volume
    key_name: str | None
    metadata: dict[str, str]
    port_ids: list[str]
    boot_at: float  # monotonic time at which BUILD ends
    error: str | None = None  # fault message: goes to ERROR instead of ACTIVE
    delete_at: float | None = None  # monotonic time at which a requested delete completes
    stuck_deleting: bool = False
    block_device_mapping: list[Json] = field(default_factory=list)
    created: str = field(default_factory=now_iso)


@dataclass(frozen=True)
class CreateCall:
    name: str
    body: Json
    status: int  # HTTP status the fake answered
    server_id: str | None  # None when refused


@dataclass(frozen=True)
class DeleteCall:
    server_id: str
    status: int


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    status: int


@dataclass
class _FailRule:
    pattern: re.Pattern[str]
    method: str | None
    remaining: int
    status: int


@dataclass
class Quota:
    instances: int = 10  # -1: unlimited, as Nova
    cores: int = 20
    ram: int = 51200


class FakeCloudState:
    """Flavors, images, networks, servers, ports and floating IPs, plus scripted faults.

    Guarded by one lock: tests call in from their thread, HTTP handlers from the fake's."""

    def __init__(self, fixed_ip: str = "127.0.0.1") -> None:
        self.fixed_ip = fixed_ip  # every port's address, so tests can SSH to a local sshd
        self._lock = threading.RLock()
        self.port = 0
        self.reset()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def compute_url(self) -> str:
        return f"{self.url}/compute/v2.1"

    @property
    def image_url(self) -> str:
        return f"{self.url}/image"

    @property
    def network_url(self) -> str:
        return f"{self.url}/network"

    # --- state and knobs (called from tests) -------------------------------------------------

    def reset(self) -> None:
        """Back to a fresh cloud: seed flavors, images, networks; no servers, faults or records."""
        with self._lock:
            self.boot_delay = 0.0  # seconds in BUILD before ACTIVE
            self.delete_delay = 0.0  # seconds a deleted server stays listed (task_state deleting)
            self.quota = Quota()
            self.flavors: dict[str, FakeFlavor] = {}
            self.images: dict[str, FakeImage] = {}
            self.networks: dict[str, FakeNetwork] = {}
            self.keypairs: set[str] = {"lockmaster"}
            self.servers: dict[str, FakeServer] = {}
            self.ports: dict[str, FakePort] = {}
            self.floating_ips: dict[str, FakeFloatingIp] = {}
            self.server_creates: list[CreateCall] = []
            self.server_deletes: list[DeleteCall] = []
            self.requests: list[RequestRecord] = []
            self._error_next: list[str] = []
            self._boot_delay_next: list[float] = []
            self._quota_next: list[str] = []
            self._delete_faults: list[Literal["error", "stuck"]] = []
            self._fail_rules: list[_FailRule] = []
            self._fip_counter = itertools.count(1)
            for name, vcpus, ram, disk in (
                ("m1.small", 1, 2048, 20),
                ("m1.medium", 2, 4096, 40),
                ("m1.large", 4, 8192, 80),
            ):
                self.add_flavor(name, vcpus, ram, disk)
            self.add_image("debian-12")
            self.add_image("ubuntu-noble")
            self.add_network("private")
            self.add_network("public", external=True)

    def add_flavor(self, name: str, vcpus: int, ram: int, disk: int = 20) -> FakeFlavor:
        with self._lock:
            flavor = FakeFlavor(str(uuid.uuid4()), name, vcpus, ram, disk)
            self.flavors[flavor.id] = flavor
            return flavor

    def add_image(self, name: str) -> FakeImage:
        with self._lock:
            image = FakeImage(str(uuid.uuid4()), name)
            self.images[image.id] = image
            return image

    def add_network(self, name: str, external: bool = False) -> FakeNetwork:
        with self._lock:
            net = FakeNetwork(str(uuid.uuid4()), name, external, str(uuid.uuid4()))
            self.networks[net.id] = net
            return net

    def add_keypair(self, name: str) -> None:
        with self._lock:
            self.keypairs.add(name)

    def set_limits(
        self, instances: int | None = None, cores: int | None = None, ram: int | None = None
    ) -> None:
        with self._lock:
            if instances is not None:
                self.quota.instances = instances
            if cores is not None:
                self.quota.cores = cores
            if ram is not None:
                self.quota.ram = ram

    def fail_next_servers(self, count: int = 1, message: str = NO_VALID_HOST) -> None:
        """The next `count` servers created end in ERROR (after their boot delay) with a fault."""
        with self._lock:
            self._error_next.extend([message] * count)

    def quota_exceeded_next(self, count: int = 1, resource: str = "instances") -> None:
        """The next `count` creates are refused as over quota, whatever the limits say."""
        with self._lock:
            self._quota_next.extend([resource] * count)

    def slow_boot_next(self, delay: float, count: int = 1) -> None:
        with self._lock:
            self._boot_delay_next.extend([delay] * count)

    def finish_boots(self) -> None:
        """Every server still booting is up now (a slow boot ends when the test says)."""
        with self._lock:
            now = time.monotonic()
            for server in self.servers.values():
                server.boot_at = min(server.boot_at, now)

    def fail_next_deletes(self, count: int = 1, mode: Literal["error", "stuck"] = "error") -> None:
        """Next deletes fail: "error" answers 500, "stuck" is accepted but never completes."""
        with self._lock:
            self._delete_faults.extend([mode] * count)

    def fail_requests(
        self, path_pattern: str, count: int = 1, status: int = 500, method: str | None = None
    ) -> None:
        """The next `count` requests whose path matches (re.search) answer `status`."""
        with self._lock:
            self._fail_rules.append(
                _FailRule(re.compile(path_pattern), method and method.upper(), count, status)
            )

    def crash_server(self, server_id: str, message: str = "Instance crashed") -> None:
        """A running server goes to ERROR (hypervisor trouble)."""
        with self._lock:
            server = self.servers[server_id]
            server.boot_at = min(server.boot_at, time.monotonic())
            server.error = message

    def live_servers(self) -> list[FakeServer]:
        """Servers still present (deleting ones included), as the API would list them."""
        with self._lock:
            self._sweep()
            return list(self.servers.values())

    @property
    def created_count(self) -> int:
        """Servers actually booted (accepted creates)."""
        with self._lock:
            return sum(1 for call in self.server_creates if call.server_id is not None)

    # --- Nova's rules ---------------------------------------------------------------------------

    def _status(self, server: FakeServer) -> tuple[str, str | None]:
        """(status, task_state), computed from the clock: boots and deletes need no timers."""
        now = time.monotonic()
        if now < server.boot_at:
            status, task = "BUILD", "spawning"
        elif server.error is not None:
            status, task = "ERROR", None
        else:
            status, task = "ACTIVE", None
        if server.delete_at is not None:
            task = "deleting"
        return status, task

    def _sweep(self) -> None:
        """Forget servers whose delete has completed (with their ports, as Nova + Neutron)."""
        now = time.monotonic()
        for server in list(self.servers.values()):
            done = server.delete_at is not None and server.delete_at <= now
            if done and not server.stuck_deleting:
                del self.servers[server.id]
                for port_id in server.port_ids:
                    self.ports.pop(port_id, None)
                    for fip in self.floating_ips.values():
                        if fip.port_id == port_id:
                            fip.port_id = None

    def _boot(self, spec: Json) -> FakeServer:
        """Validate a create as Nova does (flavor, image, networks, key, quota), then boot."""
        flavor = self.flavors.get(str(spec.get("flavorRef", "")))
        if flavor is None:
            raise FakeHTTPError(400, "Invalid flavorRef provided.")
        bdm = spec.get("block_device_mapping_v2") or []
        image_id = spec.get("imageRef") or None
        if image_id is None and not bdm:
            raise FakeHTTPError(400, "Block Device Mapping is Invalid: no image and no volume.")
        for image_ref in [image_id] + [
            d.get("uuid") for d in bdm if d.get("source_type") == "image"
        ]:
            if image_ref is not None and image_ref not in self.images:
                raise FakeHTTPError(400, f"Image {image_ref} could not be found.")
        key_name = spec.get("key_name")
        if key_name is not None and key_name not in self.keypairs:
            raise FakeHTTPError(400, "Invalid key_name provided.")
        networks = spec.get("networks")
        if networks in (None, "auto", "none"):
            net_ids = [n.id for n in self.networks.values() if not n.external][:1]
            net_ids = [] if networks == "none" else net_ids
        else:
            net_ids = [str(n.get("uuid")) for n in networks]
            for net_id in net_ids:
                if net_id not in self.networks:
                    raise FakeHTTPError(400, f"Network {net_id} could not be found.")
        self._check_quota(flavor)
        server_id = str(uuid.uuid4())
        port_ids = []
        for net_id in net_ids:
            port = FakePort(str(uuid.uuid4()), net_id, server_id, self.fixed_ip, _mac())
            self.ports[port.id] = port
            port_ids.append(port.id)
        delay = self._boot_delay_next.pop(0) if self._boot_delay_next else self.boot_delay
        server = FakeServer(
            id=server_id,
            name=str(spec["name"]),
            flavor=flavor,
            image_id=image_id,
            key_name=key_name,
            metadata={str(k): str(v) for k, v in (spec.get("metadata") or {}).items()},
            port_ids=port_ids,
            boot_at=time.monotonic() + delay,
            error=self._error_next.pop(0) if self._error_next else None,
            block_device_mapping=list(bdm),
        )
        self.servers[server.id] = server
        return server

    def _check_quota(self, flavor: FakeFlavor) -> None:
        if self._quota_next:
            resource = self._quota_next.pop(0)
            raise FakeHTTPError(
                403,
                f"Quota exceeded for {resource}: Requested 1, but already used all.",
                "forbidden",
            )
        live = list(self.servers.values())
        checks = (
            ("instances", 1, len(live), self.quota.instances),
            ("cores", flavor.vcpus, sum(s.flavor.vcpus for s in live), self.quota.cores),
            ("ram", flavor.ram, sum(s.flavor.ram for s in live), self.quota.ram),
        )
        for resource, requested, used, allowed in checks:
            if allowed >= 0 and used + requested > allowed:
                # Nova's TooManyInstances wording, answered as 403 Forbidden.
                raise FakeHTTPError(
                    403,
                    f"Quota exceeded for {resource}: Requested {requested}, but already used "
                    f"{used} of {allowed} {resource}",
                    "forbidden",
                )

    def _request_delete(self, server_id: str) -> int:
        """A DELETE as Nova handles it; returns the HTTP status (and records the call)."""
        server = self.servers.get(server_id)
        if server is None:
            self.server_deletes.append(DeleteCall(server_id, 404))
            raise FakeHTTPError(404, f"Instance {server_id} could not be found.", "itemNotFound")
        fault = self._delete_faults.pop(0) if self._delete_faults else None
        if fault == "error":
            self.server_deletes.append(DeleteCall(server_id, 500))
            raise FakeHTTPError(500, "Unexpected API Error (injected).", "computeFault")
        if server.delete_at is None:
            server.delete_at = time.monotonic() + self.delete_delay
        server.stuck_deleting = server.stuck_deleting or fault == "stuck"
        self.server_deletes.append(DeleteCall(server_id, 204))
        self._sweep()
        return 204


def _mac() -> str:
    raw = uuid.uuid4().bytes[:3]
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in raw)
