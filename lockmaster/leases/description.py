"""The TE description a holder gets (`$TE_DATAFILE`): the JSON TripleO's devtest scripts read,
plus lockmaster's own keys.

The legacy keys follow TripleO's test environment JSON exactly, as these define and read it:

- tripleo-incubator `scripts/devtest_setup.sh`, section "Devtest test environment
  configuration": the keys `arch`, `host-ip`, `seed-ip`, `ssh-key`, `ssh-user`, `nodes`,
  `baremetal-network` (`cidr`, `gateway-ip`, `seed.ip`, `seed.range-start`, `seed.range-end`,
  `undercloud.range-start`, `undercloud.range-end`), `power_manager`, `seed-route-dev`,
  `remote-operations` ("a non-empty string means true"), `remote-host`, `env-num`;
- tripleo-incubator `scripts/devtest_testenv.sh` (writes `arch`, `host-ip`, `power_manager`,
  `seed-ip`, `ssh-key`, `ssh-user`; `power_manager` defaults to
  `nova.virt.baremetal.virtual_power_driver.VirtualPowerManager`, `arch` is `i386` or `amd64`)
  and `scripts/create-nodes` (each node: `mac` a list, `cpu`, `memory` in MiB, `disk` in GiB,
  `arch`, `pm_type` "pxe_ssh", `pm_addr` the host's IP, `pm_user` the SSH user and
  `pm_password` the private SSH key itself, by design);
- tripleo-ci `elements/testenv-worker/bin/ensure-test-env` (what a CI TE added for the
  testenv-worker: `env-num`, `remote-operations` "1", `remote-host` the TE host's name,
  `seed-ip`, `seed-route-dev` "eth1");
- their readers: tripleo-incubator `boot-seed-vm`, `devtest_seed.sh`, `devtest_undercloud.sh`,
  `devtest_overcloud.sh` (`os-apply-config -m $TE_DATAFILE --key baremetal-network.seed.ip`
  etc.) and tripleo-ci `toci_instack.sh` (`ssh-key`, `ssh-user`, `host-ip`, `env-num`).

Keys are only ever added here: lockmaster's own (`host-port`, `host-key`, `ssh-key-file`,
`seed-mac`, `te`, `bridge`, `public-bridge`, `network`, `lease`, a node's `name`) stay as they
were, and so do the values of keys both share (`env-num` a number, a node's `cpu`, `memory` and
`disk` numbers and `arch` libvirt's name, e.g. "x86_64"; the devtest scripts read either form).

How lockmaster's plan maps onto `baremetal-network`: the TE's own network (`network.cidr`, its
`gateway`) is the bare metal network; the seed's address on it is `seed-ip` (lockmaster's TEs
have no second, public address for the seed); lockmaster's one DHCP range (`range-start` ..
`range-end`) is split in two halves, the first for the seed's range, the second for the
undercloud's, so the two never overlap (TripleO's defaults are .2-.20 and .21-.40).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from lockmaster.model.testenv import LeaseStatus, TESpec

# TripleO's default (devtest_testenv.sh): the TE is virtual, powered over SSH to its host.
POWER_MANAGER = "nova.virt.baremetal.virtual_power_driver.VirtualPowerManager"
# ensure-test-env's value: operations (virsh, copyseed) go over SSH to the TE host.
REMOTE_OPERATIONS = "1"
# libvirt's architecture names -> devtest's (NODE_ARCH: i386, amd64); others pass unchanged.
_TRIPLEO_ARCH = {"x86_64": "amd64", "i686": "i386"}


def tripleo_arch(arch: str) -> str:
    return _TRIPLEO_ARCH.get(arch, arch)


def split_range(start: str, end: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two non-overlapping halves of the range start..end: (seed's, undercloud's)."""
    first, last = ipaddress.ip_address(start), ipaddress.ip_address(end)
    size = int(last) - int(first) + 1
    if size < 2:
        return (start, end), (start, end)  # nothing to split: both share the one address
    seed_end = first + (size // 2 - 1)
    return (str(first), str(seed_end)), (str(seed_end + 1), str(last))


def baremetal_network(te: TESpec) -> dict[str, Any]:
    """devtest's `baremetal-network` for this TE (no `physical_bridge_route` or `public_vlan`:
    flat networking, for which TripleO leaves them absent)."""
    (seed_start, seed_end), (uc_start, uc_end) = split_range(te.network.range_start,
                                                             te.network.range_end)
    return {
        "cidr": te.network.cidr,
        "gateway-ip": te.network.gateway,
        "seed": {"ip": te.seed_ip, "range-start": seed_start, "range-end": seed_end},
        "undercloud": {"range-start": uc_start, "range-end": uc_end},
    }


def description(status: LeaseStatus, private_key: str, key_file: Path | None) -> dict[str, Any]:
    """The TE as the holder sees it: TripleO's testenv JSON (plus the lease's own fields)."""
    te = status.te
    assert te is not None
    arch = te.nodes[0].arch if te.nodes else te.seed.arch
    return {
        # lockmaster's keys (and TripleO's where the names are the same)
        "host-ip": te.host_address,
        "host-port": te.host_port,
        "host-key": te.host_key,
        "ssh-user": te.ssh_user,
        "ssh-key": private_key,
        "ssh-key-file": str(key_file) if key_file else None,
        "seed-ip": te.seed_ip,
        "seed-route-dev": te.seed_route_dev,
        "seed-mac": te.seed.mac,
        "env-num": te.env_number,
        "te": te.key,
        "bridge": te.bridge,
        "public-bridge": te.public_bridge,
        "network": {"cidr": te.network.cidr, "gateway": te.network.gateway,
                    "range-start": te.network.range_start, "range-end": te.network.range_end},
        "nodes": [
            {"name": n.name, "mac": [n.mac], "cpu": n.cpu, "memory": n.memory, "disk": n.disk,
             "arch": n.arch, "pm_type": "pxe_ssh", "pm_addr": te.host_address,
             "pm_user": te.ssh_user, "pm_password": private_key}
            for n in te.nodes
        ],
        "lease": {"id": status.id, "generation": status.generation,
                  "expires": status.expires},
        # TripleO's keys lockmaster's own do not cover (see the module's docstring)
        "arch": tripleo_arch(arch),
        "baremetal-network": baremetal_network(te),
        "power_manager": POWER_MANAGER,
        "remote-operations": REMOTE_OPERATIONS,
        "remote-host": te.host,
    }
