"""The node pools' cloud activities (launcher role): launch a node, delete one, scan for leaks.

Every server and floating IP we create carries our marks (metadata / description naming the
provider, pool, node and launch attempt), so a retried activity finds what it already created
and the leak scan recognises what no pool knows. Activities are idempotent: launching finds the
server by its name before booting one; deleting what is gone is fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
from temporalio import activity

from lockmaster.clouds.openstack import (
    CloudError,
    CloudQuotaError,
    CloudServer,
    OpenStackCloud,
    ServerSpec,
)
from lockmaster.metrics import observe
from lockmaster.metrics.domain import domain
from lockmaster.model.nodes import (
    CloudHeadroom,
    CloudServerMark,
    DeleteServerRequest,
    DeleteServerResult,
    LaunchRequest,
    LaunchResult,
    PoolSpec,
    ScanRequest,
    ScanResult,
)
from lockmaster.nodepool.marks import fip_description, fip_prefix, marks, pool_marks, server_name
from lockmaster.temporal.heartbeat import heartbeating, send

POLL_FIRST = 0.2
POLL_MAX = 5.0
SSH_PROBE_TIMEOUT = 5.0
DELETE_WAIT = 300.0

CloudFactory = Callable[[PoolSpec], OpenStackCloud]


def default_cloud(spec: PoolSpec) -> OpenStackCloud:
    if spec.cloud is None:
        raise CloudError(f"pool {spec.provider}/{spec.pool} names no cloud")
    return OpenStackCloud(spec.cloud, spec.region,
                          Path(spec.clouds_file) if spec.clouds_file else None)


class LauncherActivities:
    def __init__(self, cloud_for: CloudFactory = default_cloud) -> None:
        self.cloud_for = cloud_for

    @activity.defn(name="launch_node")
    async def launch_node(self, request: LaunchRequest) -> LaunchResult:
        started = time.monotonic()
        async with heartbeating(every=None):
            result = await self._launch(request)
        # Launch time and errors per provider and region (docs/metrics.md).
        spec = request.spec
        outcome = "ok" if result.ok else "quota" if result.quota else "error"
        reason = "" if result.ok else "quota" if result.quota else (
            # The launch and boot timeouts say "not ... within the ... timeout" (below).
            "timeout" if "within the" in (result.error or "") else "cloud")
        observe(domain().observe_launch, spec.provider, spec.region or "", spec.pool, outcome,
                time.monotonic() - started, reason)
        return result

    async def _launch(self, request: LaunchRequest) -> LaunchResult:
        """Create (or find) the server, wait for ACTIVE within the launch timeout, attach a
        floating IP if the pool asks for one, then wait for SSH within the boot timeout and
        record its host key. On failure what this attempt created is deleted."""
        spec, node = request.spec, request.node
        label = spec.labels[node.labels[0]]
        cloud = self.cloud_for(spec)
        name = server_name(spec, node.id, node.launch_attempt)
        server: CloudServer | None = None
        fip_id: str | None = None
        try:
            send(f"creating {name}")
            server = await cloud.create_server(ServerSpec(
                name=name, image=label.image or "", flavor=label.flavor or "",
                networks=list(spec.networks), key_name=label.key_name,
                metadata=marks(spec, node), boot_from_volume=label.boot_from_volume,
                volume_size=label.volume_size,
            ))
            server = await self._wait_active(cloud, server, spec.launch_timeout)
            host = server.ip
            if spec.floating_ip_network:
                description = fip_description(spec, node)
                host = await cloud.create_floating_ip(spec.floating_ip_network, server.id,
                                                      description)
                fip_id = next((f.id for f in await cloud.list_floating_ips(description)
                               if f.description == description), None)
            if not host:
                raise CloudError(f"server {server.id} ({name}) has no IP address")
            host_key = await _wait_ssh(host, label.port, spec.boot_timeout, name)
        except CloudQuotaError as exc:
            await self._undo(cloud, server, fip_id, name)
            return LaunchResult(node_id=node.id, ok=False, quota=True, error=str(exc))
        except (CloudError, TimeoutError) as exc:
            await self._undo(cloud, server, fip_id, name)
            return LaunchResult(node_id=node.id, ok=False, error=str(exc) or type(exc).__name__)
        return LaunchResult(node_id=node.id, ok=True, external_id=server.id, host=host,
                            port=label.port, host_key=host_key, floating_ip_id=fip_id)

    async def _wait_active(self, cloud: OpenStackCloud, server: CloudServer, timeout: float
                           ) -> CloudServer:
        deadline = time.monotonic() + timeout
        delay = POLL_FIRST
        while server.status != "ACTIVE":
            if server.status == "ERROR":
                fault = server.fault or "no fault message"
                if "quota" in fault.lower():
                    raise CloudQuotaError(f"server {server.name} went to ERROR: {fault}")
                raise CloudError(f"server {server.name} went to ERROR: {fault}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server {server.name} not ACTIVE within the launch timeout "
                                   f"of {timeout:g} s (last status {server.status})")
            send(f"{server.name}: {server.status}")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, POLL_MAX)
            found = await cloud.get_server(server.id)
            if found is None:
                raise CloudError(f"server {server.name} ({server.id}) disappeared while booting")
            server = found
        return server

    async def _undo(self, cloud: OpenStackCloud, server: CloudServer | None, fip_id: str | None,
                    name: str) -> None:
        with contextlib.suppress(CloudError):
            if fip_id:
                await cloud.delete_floating_ip(fip_id)
            if server is None:
                server = await cloud.find_server(name)  # created, but the answer was lost
            if server is not None:
                await cloud.delete_server(server.id)

    @activity.defn(name="delete_server")
    async def delete_server(self, request: DeleteServerRequest) -> DeleteServerResult:
        async with heartbeating(every=None):
            return await self._delete(request)

    async def _delete(self, request: DeleteServerRequest) -> DeleteServerResult:
        """Delete a node's server (by id, else by name) and its floating IP, and wait until the
        server is gone so the pool's count of servers stays true."""
        cloud = self.cloud_for(request.spec)
        try:
            if request.floating_ip_id:
                await cloud.delete_floating_ip(request.floating_ip_id)
            server_id = request.external_id
            if server_id is None and request.server_name:
                found = await cloud.find_server(request.server_name)
                server_id = found.id if found else None
            if server_id is None:
                return DeleteServerResult(ok=True)
            await cloud.delete_server(server_id)
            deadline = time.monotonic() + DELETE_WAIT
            delay = POLL_FIRST
            while (server := await cloud.get_server(server_id)) is not None:
                if time.monotonic() > deadline:
                    return DeleteServerResult(ok=False, error=f"server {server_id} still "
                                              f"{server.status} after {DELETE_WAIT:g} s")
                if server.status == "ERROR" and delay >= POLL_MAX:
                    await cloud.delete_server(server_id)  # a failed delete: ask again
                send(f"deleting {server_id}: {server.status}")
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, POLL_MAX)
        except CloudError as exc:
            raise RuntimeError(str(exc)) from exc  # retried by the activity's retry policy
        return DeleteServerResult(ok=True)

    @activity.defn(name="scan_pool")
    async def scan_pool(self, request: ScanRequest) -> ScanResult:
        """What carries this pool's marks in the cloud, the flavors' sizes, and how much the
        cloud still allows this pool (its limits minus what others use)."""
        spec = request.spec
        cloud = self.cloud_for(spec)
        try:
            servers = await cloud.list_servers(pool_marks(spec))
            fips = await cloud.list_floating_ips(fip_prefix(spec))
            sizes: dict[str, tuple[int, int]] = {}
            for name, label in spec.labels.items():
                if label.flavor:
                    flavor = await cloud.flavor(label.flavor)
                    sizes[name] = (flavor.vcpus, flavor.ram)
            limits = await cloud.limits()
        except CloudError as exc:
            return ScanResult(error=str(exc))
        ours = [s for s in servers if s.status != "DELETED"]
        our_cores = sum(sizes.get(s.metadata.get("lockmaster-label", ""), (0, 0))[0]
                        for s in ours)
        our_ram = sum(sizes.get(s.metadata.get("lockmaster-label", ""), (0, 0))[1] for s in ours)
        headroom = CloudHeadroom(
            servers=None if limits.max_servers is None
            else limits.max_servers - (limits.used_servers - len(ours)),
            cores=None if limits.max_cores is None
            else limits.max_cores - (limits.used_cores - our_cores),
            ram=None if limits.max_ram is None else limits.max_ram - (limits.used_ram - our_ram),
        )
        return ScanResult(
            servers=[_mark(s.id, s.metadata) for s in ours if "lockmaster-node" in s.metadata],
            floating_ips=[CloudServerMark(id=f.id, node_id=f.description.rsplit("/", 1)[-1])
                          for f in fips],
            headroom=headroom, label_sizes=sizes,
        )


def _mark(server_id: str, metadata: dict[str, str]) -> CloudServerMark:
    attempt = metadata.get("lockmaster-attempt", "0")
    return CloudServerMark(id=server_id, node_id=metadata["lockmaster-node"],
                           attempt=int(attempt) if attempt.isdigit() else 0)


async def _wait_ssh(host: str, port: int, timeout: float, name: str) -> str:
    """The server's SSH host key, once SSH answers (within `timeout`)."""
    deadline = time.monotonic() + timeout
    delay = POLL_FIRST
    last: str = "no answer"
    while True:
        try:
            key = await asyncio.wait_for(
                asyncssh.get_server_host_key(host, port, config=None),
                min(SSH_PROBE_TIMEOUT, timeout))
            if key is not None:
                return key.export_public_key().decode().strip()
            last = "no host key offered"
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            last = str(exc) or type(exc).__name__
        if time.monotonic() + delay > deadline:
            raise TimeoutError(f"SSH on {name} ({host}:{port}) did not answer within the boot "
                               f"timeout of {timeout:g} s: {last}")
        send(f"{name}: waiting for SSH")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, POLL_MAX)

