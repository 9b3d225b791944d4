"""Clients for the clouds that node pools launch servers on."""

from lockmaster.clouds.openstack import (
    CloudError,
    CloudQuotaError,
    CloudServer,
    Flavor,
    FloatingIp,
    Limits,
    OpenStackCloud,
    ServerSpec,
)

__all__ = [
    "CloudError",
    "CloudQuotaError",
    "CloudServer",
    "Flavor",
    "FloatingIp",
    "Limits",
    "OpenStackCloud",
    "ServerSpec",
]
