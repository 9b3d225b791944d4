"""libvirt connections, errors and lookups shared by the TE host modules.

`test:///default` (the in-memory test driver) keeps one state per process, shared by every
connection of that process, and forgets it when the last connection closes. So connections are
cached, one per URI per process, and never closed: the worker's TEs live as long as the worker.
Another process (e.g. the forced command) sees a different, fresh `test:///default`: that is why
holders' commands run inside the worker (see `agent`), not in the forced command's process.
"""

from __future__ import annotations

import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import libvirt

T = TypeVar("T")


class TEHostError(Exception):
    """A TE operation failed for a reason that retrying will not fix (missing domain, network
    or volume; libvirt refused)."""


class TEHostUnavailable(TEHostError):
    """libvirt itself cannot be reached: worth retrying (libvirtd restarting)."""


def _quiet(_ctx: object, _err: object) -> None:
    # libvirt prints every error on stderr by default; ours are raised with context instead.
    return None


libvirt.registerErrorHandler(_quiet, None)

_connections: dict[str, libvirt.virConnect] = {}
_connections_lock = threading.Lock()


def connection(uri: str) -> libvirt.virConnect:
    """The process's one connection to `uri` (opened on first use, reopened if it died)."""
    with _connections_lock:
        conn = _connections.get(uri)
        if conn is not None:
            try:
                if conn.isAlive():
                    return conn
            except libvirt.libvirtError:
                pass
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise TEHostUnavailable(f"cannot connect to libvirt at {uri}: {exc}") from exc
        _connections[uri] = conn
        return conn


def code(exc: libvirt.libvirtError) -> int:
    return int(exc.get_error_code() or 0)


@dataclass(frozen=True)
class DiskRef:
    """A domain's disk as a volume in a pool (it may be missing, e.g. after a failed restore)."""

    domain: str
    pool: str
    volume: str


# --- lookups that answer None for "not there" -------------------------------------------------


def lookup(fn: Callable[[str], T], arg: str, *, missing: int) -> T | None:
    try:
        return fn(arg)
    except libvirt.libvirtError as exc:
        if code(exc) == missing:
            return None
        raise TEHostError(f"libvirt lookup of {arg!r} failed: {exc}") from exc


def lookup_network(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork | None:
    return lookup(conn.networkLookupByName, name, missing=libvirt.VIR_ERR_NO_NETWORK)


def lookup_domain(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    return lookup(conn.lookupByName, name, missing=libvirt.VIR_ERR_NO_DOMAIN)


def lookup_pool(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool | None:
    return lookup(conn.storagePoolLookupByName, name, missing=libvirt.VIR_ERR_NO_STORAGE_POOL)


def lookup_volume(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    return lookup(pool.storageVolLookupByName, name, missing=libvirt.VIR_ERR_NO_STORAGE_VOL)


def disk_refs(conn: libvirt.virConnect, dom: libvirt.virDomain) -> list[DiskRef]:
    """The domain's disks (device='disk') as pool volumes: `type='volume'` disks name them;
    `type='file'` disks are found by path, or by their directory being a pool's target."""
    refs: list[DiskRef] = []
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    for disk in root.findall("./devices/disk[@device='disk']"):
        source = disk.find("source")
        if source is None:
            continue
        if disk.get("type") == "volume":
            refs.append(DiskRef(dom.name(), source.get("pool", ""), source.get("volume", "")))
        elif disk.get("type") == "file" and source.get("file"):
            refs.append(_file_ref(conn, dom.name(), source.get("file", "")))
    return refs


def _file_ref(conn: libvirt.virConnect, domain: str, path: str) -> DiskRef:
    vol = lookup(conn.storageVolLookupByPath, path, missing=libvirt.VIR_ERR_NO_STORAGE_VOL)
    if vol is not None:
        return DiskRef(domain, vol.storagePoolLookupByVolume().name(), vol.name())
    directory, name = os.path.split(path)
    for pool in conn.listAllStoragePools():
        target = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path")
        if target and os.path.normpath(target) == os.path.normpath(directory):
            return DiskRef(domain, pool.name(), name)
    raise TEHostError(f"domain {domain}: disk {path} is in no storage pool")


def capacity_and_format(vol: libvirt.virStorageVol) -> tuple[int, str]:
    root = ET.fromstring(vol.XMLDesc(0))
    capacity = int(root.findtext("capacity") or vol.info()[1])
    fmt = root.find("./target/format")
    return capacity, (fmt.get("type", "raw") if fmt is not None else "raw")
