"""libvirt XML for what `LibvirtHost.ensure_te` creates (networks, pool, volumes, domains).

Built with ElementTree so names and MACs from the configuration are always escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from lockmaster.model.testenv import TENode, TESpec


def _xml(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


def network_xml(name: str) -> str:
    net = ET.Element("network")
    ET.SubElement(net, "name").text = name
    ET.SubElement(net, "bridge", name=name, stp="off")
    return _xml(net)


def pool_xml(name: str, path: str) -> str:
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = name
    ET.SubElement(ET.SubElement(pool, "target"), "path").text = path
    return _xml(pool)


def volume_xml(name: str, capacity: int, fmt: str) -> str:
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    # Sparse: a blank disk takes no space until written (and the test driver's pools are small).
    ET.SubElement(vol, "allocation", unit="bytes").text = "0"
    ET.SubElement(ET.SubElement(vol, "target"), "format", type=fmt)
    return _xml(vol)


def domain_xml(
    spec: TESpec, node: TENode, seed: bool, domain_type: str, pool: str, volume: str
) -> str:
    dom = ET.Element("domain", type=domain_type)
    ET.SubElement(dom, "name").text = node.name
    ET.SubElement(dom, "memory", unit="MiB").text = str(node.memory)
    ET.SubElement(dom, "vcpu").text = str(node.cpu)
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch=node.arch).text = "hvm"
    # Nodes boot from the network (the seed deploys them); the seed boots its own disk.
    ET.SubElement(os_el, "boot", dev="hd" if seed else "network")
    devices = ET.SubElement(dom, "devices")
    disk = ET.SubElement(devices, "disk", type="volume", device="disk")
    ET.SubElement(disk, "source", pool=pool, volume=volume)
    ET.SubElement(disk, "target", dev="vda", bus="virtio")
    # The seed: first NIC (its registered MAC) on the shared public network, second on the
    # TE's own. A node: its one NIC (the MAC in the TE description) on the TE's own network.
    nics: list[tuple[str, str | None]] = [(spec.bridge, node.mac)]
    if seed:
        nics = [(spec.public_bridge, node.mac), (spec.bridge, None)]
    for network, mac in nics:
        nic = ET.SubElement(devices, "interface", type="network")
        if mac:
            ET.SubElement(nic, "mac", address=mac)
        ET.SubElement(nic, "source", network=network)
        ET.SubElement(nic, "model", type="virtio")
    return _xml(dom)
