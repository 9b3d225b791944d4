"""The TE description lockmaster builds carries TripleO's test environment JSON (the keys
tripleo-incubator's devtest scripts and tripleo-ci's toci scripts read) beside its own keys."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lockmaster.config.models import TEHost
from lockmaster.leases.description import description, split_range, tripleo_arch
from lockmaster.leases.specs import host_te
from lockmaster.model.testenv import LeaseState, LeaseStatus

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
# What lockmaster's description had before TripleO's keys were added: never renamed or dropped.
LOCKMASTER_KEYS = {"host-ip", "host-port", "host-key", "ssh-user", "ssh-key", "ssh-key-file",
                   "seed-ip", "seed-route-dev", "seed-mac", "env-num", "te", "bridge",
                   "public-bridge", "network", "nodes", "lease"}
# Keys devtest and toci read with os-apply-config (dotted: nested) from $TE_DATAFILE.
TRIPLEO_READS = ["arch", "host-ip", "ssh-user", "ssh-key", "seed-ip", "seed-route-dev", "env-num",
                 "power_manager", "remote-operations", "baremetal-network.cidr",
                 "baremetal-network.gateway-ip", "baremetal-network.seed.ip",
                 "baremetal-network.seed.range-start", "baremetal-network.seed.range-end",
                 "baremetal-network.undercloud.range-start",
                 "baremetal-network.undercloud.range-end"]


def te_host(**overrides: Any) -> TEHost:
    data = {"name": "tehost3", "address": "198.51.100.7", "host-key": "ssh-ed25519 AAAAC3Nza",
            "te-count": 2, "first-env": 4, "nodes-per-te": 3,
            "node": {"cpu": 2, "memory": 4096, "disk": 40}, "network": "10.20.0.0/16"}
    data.update(overrides)
    return TEHost.model_validate(data)


def described(host: TEHost | None = None, env: int = 4) -> dict[str, Any]:
    spec = host_te(host or te_host(), env)
    status = LeaseStatus(id="lease-1", state=LeaseState.GRANTED, te=spec, generation=3,
                         expires=1000.0)
    return description(status, KEY, Path("/state/te-leases/lease-1/te.json.key"))


def lookup(desc: dict[str, Any], dotted: str) -> Any:
    """os-apply-config's `--key a.b.c`."""
    value: Any = desc
    for part in dotted.split("."):
        value = value[part]
    return value


def test_tripleo_keys_with_their_values() -> None:
    d = described()
    assert d["arch"] == "amd64"  # devtest's NODE_ARCH name for the nodes' x86_64
    assert d["power_manager"] == "nova.virt.baremetal.virtual_power_driver.VirtualPowerManager"
    assert d["remote-operations"] == "1"
    assert d["remote-host"] == "tehost3"
    # env 4: the fifth /24 of 10.20.0.0/16; gateway .1, seed .2, lockmaster's range .10-.100
    # split in halves between the seed's and the undercloud's DHCP ranges.
    assert d["baremetal-network"] == {
        "cidr": "10.20.4.0/24",
        "gateway-ip": "10.20.4.1",
        "seed": {"ip": "10.20.4.2", "range-start": "10.20.4.10", "range-end": "10.20.4.54"},
        "undercloud": {"range-start": "10.20.4.55", "range-end": "10.20.4.100"},
    }
    assert d["seed-ip"] == d["baremetal-network"]["seed"]["ip"]
    assert d["host-ip"] == "198.51.100.7" and d["ssh-user"] == "te" and d["ssh-key"] == KEY
    assert d["env-num"] == 4 and d["seed-route-dev"] == "eth1"


def test_nodes_as_create_nodes_writes_them() -> None:
    nodes = described()["nodes"]
    assert [n["name"] for n in nodes] == ["baremetalbrbm4_0", "baremetalbrbm4_1",
                                          "baremetalbrbm4_2"]
    for i, node in enumerate(nodes):
        assert node["mac"] == [f"52:54:00:00:04:{i + 1:02x}"]  # a list of MACs
        assert (node["cpu"], node["memory"], node["disk"], node["arch"]) == (2, 4096, 40,
                                                                             "x86_64")
        assert node["pm_type"] == "pxe_ssh"
        assert node["pm_addr"] == "198.51.100.7" and node["pm_user"] == "te"
        assert node["pm_password"] == KEY  # the private key itself, by design


def test_lockmaster_keys_are_kept() -> None:
    d = described()
    assert LOCKMASTER_KEYS <= set(d)
    assert d["network"] == {"cidr": "10.20.4.0/24", "gateway": "10.20.4.1",
                            "range-start": "10.20.4.10", "range-end": "10.20.4.100"}
    assert d["ssh-key-file"] == "/state/te-leases/lease-1/te.json.key"
    assert d["te"] == "tehost3/te4" and d["bridge"] == "brbm4"
    assert d["lease"] == {"id": "lease-1", "generation": 3, "expires": 1000.0}


def test_every_key_devtest_reads_resolves_and_ranges_fit_the_network() -> None:
    d = json.loads(json.dumps(described()))  # as a script reads the file
    for key in TRIPLEO_READS:
        assert lookup(d, key) not in (None, ""), key
    net = d["baremetal-network"]
    cidr = ipaddress.ip_network(net["cidr"])
    seed, uc = net["seed"], net["undercloud"]
    addresses = [ipaddress.ip_address(a) for a in (
        net["gateway-ip"], seed["ip"], seed["range-start"], seed["range-end"],
        uc["range-start"], uc["range-end"])]
    assert all(a in cidr for a in addresses)
    gateway, seed_ip, s0, s1, u0, u1 = addresses
    assert s0 <= s1 < u0 <= u1  # two ranges, not overlapping
    assert not s0 <= seed_ip <= u1 and not s0 <= gateway <= u1  # fixed addresses outside them


def test_devtests_jq_reads_it() -> None:
    """The jq expressions devtest_seed.sh and set-usergroup-membership use, on the file."""
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    data = json.dumps(described())

    def run(expr: str) -> str:
        return subprocess.run(["jq", "-r", expr], input=data, capture_output=True, text=True,
                              check=True).stdout.strip()

    assert run('.["baremetal-network"].seed.physical_bridge_route // {}') == "{}"
    assert run('.["remote-operations"]') == "1"
    assert run(".nodes[0].pm_password") == KEY.strip()


def test_arch_and_range_helpers() -> None:
    assert [tripleo_arch(a) for a in ("x86_64", "i686", "ppc64le")] == ["amd64", "i386",
                                                                        "ppc64le"]
    assert split_range("10.0.0.10", "10.0.0.13") == (("10.0.0.10", "10.0.0.11"),
                                                     ("10.0.0.12", "10.0.0.13"))
    assert split_range("10.0.0.10", "10.0.0.10") == (("10.0.0.10", "10.0.0.10"),
                                                     ("10.0.0.10", "10.0.0.10"))
    # a seed-only TE (no nodes) describes the seed's architecture
    d = described(te_host(**{"nodes-per-te": 0, "seed": {"arch": "i686"}}))
    assert d["nodes"] == [] and d["arch"] == "i386"
