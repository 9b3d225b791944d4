"""libvirt operations for the TEs of one host (blocking calls: run them in a thread).

A TE is a seed domain plus "baremetal" node domains. Each TE has its own libvirt network named
after its bridge (`spec.bridge`, e.g. brbm1; in production typically an OVS-backed network);
the seed's first NIC is on the shared public network (`spec.public_bridge`), its second on the
TE's own, and every node has one NIC on the TE's own network. Each domain's first disk is a
volume in a storage pool.

Domains are destroyed, never undefined (TripleO's rule: the TE is pre-set-up and its MACs are
registered elsewhere). Restoring a disk means deleting its volume and creating it again, empty,
with the same name, capacity and format: the clean state of a TE is blank disks (the holder
copies the seed image in; nodes are deployed onto by the job). The test driver supports exactly
that (it has no wipe and no upload).

One connection per URI per process (see `libvirt_conn`): on `test:///default` the TEs live in
the worker's memory for as long as the worker runs.
"""

from __future__ import annotations

import threading
from pathlib import Path

import libvirt

from lockmaster.model.testenv import TENode, TESpec
from lockmaster.testenv.libvirt_conn import (
    DiskRef,
    TEHostError,
    TEHostUnavailable,
    capacity_and_format,
    code,
    connection,
    disk_refs,
    lookup_domain,
    lookup_network,
    lookup_pool,
    lookup_volume,
)
from lockmaster.testenv.libvirt_xml import domain_xml, network_xml, pool_xml, volume_xml
from lockmaster.testenv.seed_upload import FileUpload, SeedUpload, StreamUpload

__all__ = ["LibvirtHost", "TEHostError", "TEHostUnavailable", "connection"]

DEFAULT_POOL = "lockmaster"
DEFAULT_POOL_PATH = "/var/lib/lockmaster/images"

# virsh's words for domain states, so `list` reads like TripleO's `virsh list --all`.
STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "idle",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "in shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


class LibvirtHost:
    """The TEs of one host, by their specs (each spec names its own libvirt URI).

    `create_missing`: whether `ensure_te` defines what is missing (None: only on the test driver,
    i.e. URIs starting with "test:"; production TEs are pre-created by operators and only
    checked). `pool`/`pool_path`: where created volumes go. `image_dir`: where seed images land
    when the driver cannot upload into a volume (the test driver).
    """

    def __init__(
        self,
        *,
        create_missing: bool | None = None,
        pool: str = DEFAULT_POOL,
        pool_path: str = DEFAULT_POOL_PATH,
        image_dir: Path | None = None,
    ) -> None:
        self.create_missing = create_missing
        self.pool = pool
        self.pool_path = pool_path
        self.image_dir = image_dir
        self._define_lock = threading.Lock()  # TEs share the public network and the pool

    # --- setting up and checking ----------------------------------------------------------

    def ensure_te(self, spec: TESpec) -> list[str]:
        """Make sure the TE's networks, domains and disks exist; returns what was created.
        In check-only mode, raises one error listing everything missing."""
        conn = connection(spec.libvirt_uri)
        create = (
            spec.libvirt_uri.startswith("test:")
            if self.create_missing is None
            else self.create_missing
        )
        with self._define_lock:
            try:
                if create:
                    return self._create_missing(conn, spec)
                self._check_present(conn, spec)
                return []
            except libvirt.libvirtError as exc:
                raise TEHostError(f"TE {spec.key}: preparing failed: {exc}") from exc

    def _create_missing(self, conn: libvirt.virConnect, spec: TESpec) -> list[str]:
        created: list[str] = []
        for net in (spec.public_bridge, spec.bridge):
            if lookup_network(conn, net) is None:
                network = conn.networkDefineXML(network_xml(net))
                network.setAutostart(1)
                network.create()
                created.append(f"network {net}")
        pool = self._pool(conn, create=True, created=created)
        domain_type = "test" if conn.getType() == "TEST" else "kvm"
        for index, node in enumerate(_nodes(spec)):
            volume = f"{node.name}.img"
            if lookup_volume(pool, volume) is None:
                pool.createXML(volume_xml(volume, node.disk * 1024**3, "raw"), 0)
                created.append(f"volume {self.pool}/{volume}")
            if lookup_domain(conn, node.name) is None:
                conn.defineXML(domain_xml(spec, node, index == 0, domain_type, self.pool, volume))
                created.append(f"domain {node.name}")
        return created

    def _check_present(self, conn: libvirt.virConnect, spec: TESpec) -> None:
        missing = [
            f"network {net}"
            for net in (spec.public_bridge, spec.bridge)
            if lookup_network(conn, net) is None
        ]
        for name in spec.domains():
            dom = lookup_domain(conn, name)
            if dom is None:
                missing.append(f"domain {name}")
                continue
            for disk in disk_refs(conn, dom):
                pool = lookup_pool(conn, disk.pool)
                if pool is None or lookup_volume(pool, disk.volume) is None:
                    missing.append(f"volume {disk.pool}/{disk.volume}")
        if missing:
            raise TEHostError(f"TE {spec.key} on {spec.libvirt_uri}: missing {', '.join(missing)}")

    def _pool(
        self, conn: libvirt.virConnect, *, create: bool, created: list[str]
    ) -> libvirt.virStoragePool:
        pool = lookup_pool(conn, self.pool)
        if pool is None:
            if not create:
                raise TEHostError(f"storage pool {self.pool} is missing on {conn.getURI()}")
            pool = conn.storagePoolDefineXML(pool_xml(self.pool, self.pool_path), 0)
            pool.setAutostart(1)
            created.append(f"pool {self.pool}")
        if not pool.isActive():
            pool.create(0)
        return pool

    def check_bridges(self, spec: TESpec) -> list[str]:
        """The TE's own network and the public one exist and are active (inactive ones are
        started); returns the ones started. Missing ones are an error: they are the operator's."""
        conn = connection(spec.libvirt_uri)
        started: list[str] = []
        for net in (spec.bridge, spec.public_bridge):
            network = lookup_network(conn, net)
            if network is None:
                raise TEHostError(f"TE {spec.key}: libvirt network {net!r} is missing")
            try:
                if not network.isActive():
                    network.create()
                    started.append(net)
            except libvirt.libvirtError as exc:
                raise TEHostError(f"TE {spec.key}: cannot start network {net!r}: {exc}") from exc
        return started

    # --- domains --------------------------------------------------------------------------

    def domain_states(self, spec: TESpec) -> dict[str, str]:
        conn = connection(spec.libvirt_uri)
        states: dict[str, str] = {}
        for name in spec.domains():
            dom = self._domain(conn, spec, name)
            try:
                state, _reason = dom.state()
            except libvirt.libvirtError as exc:
                raise TEHostError(f"TE {spec.key}: state of {name}: {exc}") from exc
            states[name] = STATE_NAMES.get(state, f"state {state}")
        return states

    def start_domain(self, spec: TESpec, name: str) -> bool:
        """Start one of the TE's domains; False if it was already running."""
        dom = self._domain(connection(spec.libvirt_uri), spec, name)
        try:
            if dom.isActive():
                return False
            dom.create()
            return True
        except libvirt.libvirtError as exc:
            raise TEHostError(f"TE {spec.key}: cannot start {name}: {exc}") from exc

    def destroy_domain(self, spec: TESpec, name: str) -> bool:
        """Power one of the TE's domains off (never undefine it); False if it was not running."""
        dom = self._domain(connection(spec.libvirt_uri), spec, name)
        try:
            if not dom.isActive():
                return False
            dom.destroy()
            return True
        except libvirt.libvirtError as exc:
            raise TEHostError(f"TE {spec.key}: cannot destroy {name}: {exc}") from exc

    def destroy_domains(self, spec: TESpec) -> list[str]:
        """Destroy every running domain of the TE; returns those that were running."""
        return [name for name in spec.domains() if self.destroy_domain(spec, name)]

    def _domain(self, conn: libvirt.virConnect, spec: TESpec, name: str) -> libvirt.virDomain:
        if name not in spec.domains():
            raise TEHostError(f"TE {spec.key}: {name!r} is not one of its domains")
        dom = lookup_domain(conn, name)
        if dom is None:
            raise TEHostError(f"TE {spec.key}: domain {name!r} is not defined on {conn.getURI()}")
        return dom

    # --- disks ----------------------------------------------------------------------------

    def restore_disks(self, spec: TESpec) -> list[str]:
        """Give every domain of the TE blank disks again (delete + recreate each volume, same
        name, capacity and format). Domains must be shut off. Returns the volumes restored."""
        conn = connection(spec.libvirt_uri)
        nodes = {node.name: node for node in _nodes(spec)}
        refs: list[DiskRef] = []
        for name in spec.domains():
            dom = self._domain(conn, spec, name)
            if dom.isActive():
                raise TEHostError(f"TE {spec.key}: {name} is running; destroy it first")
            refs.extend(disk_refs(conn, dom))
        restored: list[str] = []
        for ref in refs:
            try:
                self._restore_volume(conn, ref, nodes[ref.domain].disk * 1024**3)
            except libvirt.libvirtError as exc:
                raise TEHostError(
                    f"TE {spec.key}: cannot restore {ref.pool}/{ref.volume} of {ref.domain}: {exc}"
                ) from exc
            restored.append(f"{ref.pool}/{ref.volume}")
        return restored

    def _restore_volume(self, conn: libvirt.virConnect, ref: DiskRef, default_size: int) -> None:
        pool = lookup_pool(conn, ref.pool)
        if pool is None:
            raise TEHostError(f"storage pool {ref.pool} is missing")
        size, fmt = default_size, "raw"
        vol = lookup_volume(pool, ref.volume)
        if vol is not None:  # missing: a restore died between delete and create; make it again
            size, fmt = capacity_and_format(vol)
            vol.delete(0)
        pool.createXML(volume_xml(ref.volume, size, fmt), 0)
        if self.image_dir is not None:
            (self.image_dir / ref.pool / ref.volume).unlink(missing_ok=True)

    def open_seed_upload(self, spec: TESpec) -> SeedUpload:
        """Start writing a seed image into the seed's (first) disk. The seed must be shut off."""
        conn = connection(spec.libvirt_uri)
        dom = self._domain(conn, spec, spec.seed.name)
        if dom.isActive():
            raise TEHostError(f"TE {spec.key}: {spec.seed.name} is running; destroy it first")
        refs = disk_refs(conn, dom)
        if not refs:
            raise TEHostError(f"TE {spec.key}: {spec.seed.name} has no disk")
        ref = refs[0]
        pool = lookup_pool(conn, ref.pool)
        vol = lookup_volume(pool, ref.volume) if pool is not None else None
        if vol is None:
            raise TEHostError(f"TE {spec.key}: seed volume {ref.pool}/{ref.volume} is missing")
        try:
            return StreamUpload(conn, vol)
        except libvirt.libvirtError as exc:
            if code(exc) != libvirt.VIR_ERR_NO_SUPPORT:
                raise TEHostError(f"TE {spec.key}: cannot upload the seed image: {exc}") from exc
        if self.image_dir is None:
            raise TEHostError(
                f"TE {spec.key}: {spec.libvirt_uri} cannot upload into volumes and no image "
                "directory is configured"
            )
        return FileUpload(self.image_dir / ref.pool / ref.volume)

    def seed_image_file(self, spec: TESpec) -> Path | None:
        """Where a seed image went on drivers without upload (None if it cannot be known)."""
        if self.image_dir is None:
            return None
        conn = connection(spec.libvirt_uri)
        refs = disk_refs(conn, self._domain(conn, spec, spec.seed.name))
        return self.image_dir / refs[0].pool / refs[0].volume if refs else None


def _nodes(spec: TESpec) -> list[TENode]:
    return [spec.seed, *spec.nodes]
