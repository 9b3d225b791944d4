"""lockmaster's OpenStack client: boot, watch and delete servers, read quotas, floating IPs.

Built on openstacksdk's proxy layer (not its "cloud" layer, which waits, retries and adds IPs on
its own). openstacksdk is blocking, so every call runs in a worker thread; one Connection is
cached per (clouds.yaml, cloud, region) and rebuilt when the file changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import keystoneauth1.exceptions as ks_exceptions
from openstack import exceptions as sdk_exceptions
from openstack.config.loader import OpenStackConfig
from openstack.connection import Connection
from pydantic import BaseModel

log = logging.getLogger(__name__)

T = TypeVar("T")

API_TIMEOUT = 60.0  # seconds per HTTP request when clouds.yaml sets no api_timeout
BOOT_VOLUME_SIZE = 50  # GiB, Nodepool's default when a pool boots from volume without a size
DELETING = "DELETING"  # status reported while Nova's task_state is "deleting"


class CloudError(Exception):
    """The cloud refused or failed a request (or its configuration is wrong)."""


class CloudQuotaError(CloudError):
    """Over quota: the caller should wait for capacity; this is not a failed launch attempt."""


class Flavor(BaseModel):
    name: str
    vcpus: int
    ram: int  # MiB


class Limits(BaseModel):
    max_servers: int | None  # None: unlimited
    max_cores: int | None
    max_ram: int | None  # MiB
    used_servers: int
    used_cores: int
    used_ram: int


class CloudServer(BaseModel):
    id: str
    name: str
    status: str  # Nova's status (BUILD, ACTIVE, ERROR, ...), or DELETING while being deleted
    metadata: dict[str, str]
    ip: str | None  # accessIPv4, else a floating IPv4, else a fixed IPv4, else any address
    fault: str | None  # Nova's fault message, set when status is ERROR


class ServerSpec(BaseModel):
    name: str
    image: str  # name or id
    flavor: str  # name or id
    networks: list[str]  # names or ids; empty: Nova's "auto"
    key_name: str | None = None
    metadata: dict[str, str] = {}
    boot_from_volume: bool = False
    volume_size: int | None = None  # GiB


class FloatingIp(BaseModel):
    id: str
    address: str
    description: str
    port_id: str | None


_connections: dict[tuple[str | None, str, str | None], tuple[int, Connection]] = {}
_connections_lock = threading.Lock()


class OpenStackCloud:
    """One cloud and region from a clouds.yaml (`config_file`, or openstacksdk's usual search)."""

    def __init__(self, cloud: str, region: str | None, config_file: Path | None = None) -> None:
        self.cloud = cloud
        self.region = region
        self.config_file = config_file

    def __repr__(self) -> str:
        return f"OpenStackCloud({self.cloud!r}, {self.region!r}, {self.config_file!s})"

    @property
    def where(self) -> str:
        region = f" region {self.region!r}" if self.region else ""
        return f"OpenStack cloud {self.cloud!r}{region}"

    # --- servers -----------------------------------------------------------------------------

    async def create_server(self, spec: ServerSpec) -> CloudServer:
        """Boot a server, unless one with this name and metadata already exists (a retried
        activity): then return that one, whatever its status."""

        def create(conn: Connection) -> CloudServer:
            for server in self._exact(conn, spec.name):
                if server.status != DELETING and _contains(server.metadata, spec.metadata):
                    log.info("%s: server %s (%s) already exists", self.where, spec.name, server.id)
                    return server
            attrs = self._boot_attrs(conn, spec)
            created = conn.compute.create_server(**attrs)
            log.info("%s: created server %s (%s)", self.where, spec.name, created.id)
            return _server(conn.compute.get_server(created.id))

        return await self._run(f"create server {spec.name!r}", create)

    def _boot_attrs(self, conn: Connection, spec: ServerSpec) -> dict[str, Any]:
        image = _find(conn.image.find_image, spec.image)
        if image is None:
            raise CloudError(f"{self.where}: image {spec.image!r} not found")
        flavor = _find(conn.compute.find_flavor, spec.flavor)
        if flavor is None:
            raise CloudError(f"{self.where}: flavor {spec.flavor!r} not found")
        networks: list[dict[str, str]] | str = [
            {"uuid": self._network_id(conn, name)} for name in spec.networks
        ]
        attrs: dict[str, Any] = {
            "name": spec.name,
            "flavor_id": flavor.id,
            "networks": networks or "auto",
            "metadata": dict(spec.metadata),
        }
        if spec.key_name:
            attrs["key_name"] = spec.key_name
        if spec.boot_from_volume:
            attrs["block_device_mapping"] = [
                {
                    "boot_index": 0,
                    "uuid": image.id,
                    "source_type": "image",
                    "destination_type": "volume",
                    "volume_size": spec.volume_size or BOOT_VOLUME_SIZE,
                    "delete_on_termination": True,
                }
            ]
        else:
            attrs["image_id"] = image.id
        return attrs

    def _network_id(self, conn: Connection, name: str) -> str:
        network = _find(conn.network.find_network, name)
        if network is None:
            raise CloudError(f"{self.where}: network {name!r} not found")
        return str(network.id)

    async def get_server(self, server_id: str) -> CloudServer | None:
        """The server, or None once it is gone."""

        def get(conn: Connection) -> CloudServer | None:
            try:
                return _server(conn.compute.get_server(server_id))
            except sdk_exceptions.NotFoundException:
                return None

        return await self._run(f"get server {server_id}", get)

    async def find_server(self, name: str) -> CloudServer | None:
        """The server with exactly this name (one not being deleted, if there are several)."""

        def find(conn: Connection) -> CloudServer | None:
            servers = sorted(self._exact(conn, name), key=lambda s: s.status == DELETING)
            return servers[0] if servers else None

        return await self._run(f"find server {name!r}", find)

    async def delete_server(self, server_id: str) -> None:
        """Ask Nova to delete; a server already gone is fine. Poll get_server to see it go."""

        def delete(conn: Connection) -> None:
            conn.compute.delete_server(server_id, ignore_missing=True)
            log.info("%s: deleting server %s", self.where, server_id)

        await self._run(f"delete server {server_id}", delete)

    async def list_servers(self, metadata: dict[str, str]) -> list[CloudServer]:
        """Servers whose metadata contains all these pairs (Nova cannot filter on metadata)."""

        def list_(conn: Connection) -> list[CloudServer]:
            servers = [_server(s) for s in conn.compute.servers(details=True)]
            return [s for s in servers if _contains(s.metadata, metadata)]

        return await self._run("list servers", list_)

    def _exact(self, conn: Connection, name: str) -> list[CloudServer]:
        # Nova's `name` filter is a regular expression: use it to narrow, then compare exactly.
        servers = conn.compute.servers(details=True, name=name)
        return [_server(s) for s in servers if s.name == name]

    # --- flavors and quota -----------------------------------------------------------------------

    async def flavor(self, name: str) -> Flavor:
        def get(conn: Connection) -> Flavor:
            flavor = _find(conn.compute.find_flavor, name)
            if flavor is None:
                known = sorted(str(f.name) for f in conn.compute.flavors())
                raise CloudError(f"{self.where}: flavor {name!r} not found (it has {known})")
            return Flavor(name=flavor.name, vcpus=flavor.vcpus, ram=flavor.ram)

        return await self._run(f"get flavor {name!r}", get)

    async def limits(self) -> Limits:
        def get(conn: Connection) -> Limits:
            absolute = conn.compute.get_limits().absolute
            return Limits(
                max_servers=_limit(absolute.instances),
                max_cores=_limit(absolute.total_cores),
                max_ram=_limit(absolute.total_ram),
                used_servers=absolute.instances_used or 0,
                used_cores=absolute.total_cores_used or 0,
                used_ram=absolute.total_ram_used or 0,
            )

        return await self._run("get limits", get)

    # --- floating IPs ----------------------------------------------------------------------------

    async def create_floating_ip(self, network: str, server_id: str, description: str) -> str:
        """A floating IP from `network` on the server's first port; returns its address. A
        floating IP with this exact description is reused (and moved to this server if needed)."""

        def create(conn: Connection) -> str:
            ports = list(conn.network.ports(device_id=server_id))
            if not ports:
                raise CloudError(f"{self.where}: server {server_id} has no port for a floating IP")
            port_ids = {p.id for p in ports}
            for fip in conn.network.ips(description=description):
                if fip.description == description:
                    if fip.port_id not in port_ids:
                        fip = conn.network.update_ip(fip, port_id=ports[0].id)
                    return str(fip.floating_ip_address)
            fip = conn.network.create_ip(
                floating_network_id=self._network_id(conn, network),
                port_id=ports[0].id,
                description=description,
            )
            log.info("%s: floating IP %s for server %s", self.where, fip.id, server_id)
            return str(fip.floating_ip_address)

        return await self._run(f"create floating IP {description!r}", create)

    async def list_floating_ips(self, description_prefix: str) -> list[FloatingIp]:
        def list_(conn: Connection) -> list[FloatingIp]:
            return [
                FloatingIp(
                    id=fip.id,
                    address=fip.floating_ip_address,
                    description=fip.description or "",
                    port_id=fip.port_id,
                )
                for fip in conn.network.ips()
                if (fip.description or "").startswith(description_prefix)
            ]

        return await self._run("list floating IPs", list_)

    async def delete_floating_ip(self, fip_id: str) -> None:
        """Release a floating IP; one already gone is fine."""

        def delete(conn: Connection) -> None:
            conn.network.delete_ip(fip_id, ignore_missing=True)

        await self._run(f"delete floating IP {fip_id}", delete)

    # --- plumbing --------------------------------------------------------------------------------

    async def _run(self, what: str, call: Callable[[Connection], T]) -> T:
        def invoke() -> T:
            return call(self._connection())

        try:
            return await asyncio.to_thread(invoke)
        except CloudError:
            raise
        except (sdk_exceptions.SDKException, ks_exceptions.ClientException) as exc:
            raise _translate(exc, f"{self.where}: {what} failed") from exc

    def _connection(self) -> Connection:
        path = str(self.config_file) if self.config_file is not None else None
        stamp = os.stat(path).st_mtime_ns if path and os.path.exists(path) else 0
        key = (path, self.cloud, self.region)
        with _connections_lock:
            cached = _connections.get(key)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            conn = Connection(config=self._cloud_region(path), strict_proxies=True)
            # A replaced connection is dropped, not closed: another thread may be using it.
            _connections[key] = (stamp, conn)
        return conn

    def _cloud_region(self, path: str | None) -> Any:
        if path is None:
            config = OpenStackConfig()
            source = config.config_filename or "openstacksdk's clouds.yaml search path"
        else:
            if not os.path.exists(path):
                raise CloudError(f"{self.where}: clouds file {path} does not exist")
            # Only this file (and a secure.yaml beside it), never OS_* environment variables.
            secure = str(Path(path).with_name("secure.yaml"))
            config = OpenStackConfig(
                config_files=[path], vendor_files=[], secure_files=[secure], load_envvars=False
            )
            if config.config_filename != path:  # openstacksdk skips unreadable files silently
                raise CloudError(f"{self.where}: clouds file {path} is not readable YAML")
            source = path
        names = [n for n in config.get_cloud_names() if n != "defaults"]
        if self.cloud not in names:
            raise CloudError(
                f"{self.where}: no such cloud in {source} (it has: {', '.join(names) or 'none'})"
            )
        region = config.get_one(cloud=self.cloud, region_name=self.region)
        if region.config.get("api_timeout") is None:
            region.config["api_timeout"] = API_TIMEOUT
        return region


def _translate(exc: Exception, context: str) -> CloudError:
    if isinstance(exc, sdk_exceptions.HttpException):
        details = exc.details or exc.message
        reason = f"HTTP {exc.status_code}: {details}"
        quota = exc.status_code == 413 or "quota exceeded" in str(details).lower()
        return (CloudQuotaError if quota else CloudError)(f"{context}: {reason}")
    if isinstance(exc, ks_exceptions.ClientException):
        return CloudError(f"{context}: {type(exc).__name__}: {exc}")
    return CloudError(f"{context}: {exc}")


def _server(server: Any) -> CloudServer:
    status = DELETING if server.task_state == "deleting" else str(server.status or "UNKNOWN")
    fault = server.fault.get("message") if isinstance(server.fault, dict) else None
    return CloudServer(
        id=server.id,
        name=server.name,
        status=status,
        metadata={str(k): str(v) for k, v in (server.metadata or {}).items()},
        ip=server.access_ipv4 or _address(server.addresses or {}),
        fault=fault,
    )


def _address(addresses: dict[str, list[dict[str, Any]]]) -> str | None:
    entries = [entry for network in addresses.values() for entry in network]
    for kind, version in (("floating", 4), ("fixed", 4), (None, None)):
        for entry in entries:
            if kind is None or (
                entry.get("OS-EXT-IPS:type") == kind and entry.get("version") == version
            ):
                return str(entry["addr"])
    return None


def _find(finder: Callable[..., Any], name_or_id: str) -> Any:
    # ignore_missing=True is deprecated in openstacksdk (its default flips in 6.0).
    try:
        return finder(name_or_id, ignore_missing=False)
    except sdk_exceptions.NotFoundException:
        return None


def _contains(metadata: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(metadata.get(key) == value for key, value in wanted.items())


def _limit(value: int | None) -> int | None:
    return None if value is None or value < 0 else int(value)
