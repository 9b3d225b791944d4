"""From the configuration's TE hosts to the TEs they carry (`TESpec`), by the naming plan."""

from __future__ import annotations

import ipaddress

from lockmaster.config.models import LockmasterConfig, TEHost
from lockmaster.model.testenv import TENetwork, TENode, TESpec


class TEPlanError(ValueError):
    pass


def broker_id(label: str, prefix: str = "") -> str:
    return f"{prefix}te/{label}"


def te_specs(config: LockmasterConfig) -> dict[str, list[TESpec]]:
    """TEs by label, in configuration order."""
    found: dict[str, list[TESpec]] = {}
    for host in config.testenvs.hosts:
        for env in range(host.first_env, host.first_env + host.te_count):
            found.setdefault(host.label, []).append(host_te(host, env))
    return found


def _mac(host: TEHost, env: int, index: int) -> str:
    return f"{host.mac_prefix}:{env // 256:02x}:{env % 256:02x}:{index:02x}".lower()


def host_te(host: TEHost, env: int) -> TESpec:
    network = ipaddress.ip_network(host.network, strict=False)
    try:
        subnet = next(s for i, s in enumerate(network.subnets(new_prefix=24)) if i == env)
    except (StopIteration, ValueError) as exc:
        raise TEPlanError(f"TE host {host.name!r}: network {host.network} has no /24 for env "
                          f"{env}; use a larger network") from exc
    addresses = list(subnet.hosts())
    bridge = f"{host.bridge_prefix}{env}"
    return TESpec(
        host=host.name, name=f"te{env}", env_number=env, libvirt_uri=host.libvirt_uri,
        host_address=host.address, host_port=host.port, host_key=host.host_key,
        ssh_user=host.ssh_user,
        seed=TENode(name=f"seed_{env}", mac=_mac(host, env, 0), cpu=host.seed.cpu,
                    memory=host.seed.memory, disk=host.seed.disk, arch=host.seed.arch),
        seed_ip=str(addresses[1]), seed_route_dev=host.seed_route_dev,
        nodes=[TENode(name=f"baremetal{bridge}_{i}", mac=_mac(host, env, i + 1),
                      cpu=host.node.cpu, memory=host.node.memory, disk=host.node.disk,
                      arch=host.node.arch)
               for i in range(host.nodes_per_te)],
        public_bridge=host.public_bridge, bridge=bridge,
        network=TENetwork(cidr=str(subnet), gateway=str(addresses[0]),
                          range_start=str(addresses[9]), range_end=str(addresses[99])),
        labels=[host.label],
    )
