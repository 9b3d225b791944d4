"""The fake's Glance (image v2) and Neutron (network v2.0): images, networks, ports, floating
IPs, with their version documents."""

from __future__ import annotations

import re
import uuid
from typing import Any

from aiohttp import web

from tests.fakes.openstack_state import (
    PROJECT_ID,
    FakeCloudState,
    FakeFloatingIp,
    FakeHTTPError,
    FakeImage,
    FakeNetwork,
    FakePort,
    Json,
)


class NetworkApi(FakeCloudState):
    """Glance's and Neutron's handlers; routes are in openstack_cloud.py."""

    async def _image_versions(self, request: web.Request, _: re.Match[str]) -> web.Response:
        link = [{"rel": "self", "href": f"{self.image_url}/v2/"}]
        versions = [{"id": "v2.15", "status": "CURRENT", "links": link}]
        versions += [
            {"id": f"v2.{n}", "status": "SUPPORTED", "links": link} for n in range(14, -1, -1)
        ]
        return web.json_response({"versions": versions})

    async def _network_versions(self, request: web.Request, _: re.Match[str]) -> web.Response:
        link = [{"rel": "self", "href": f"{self.network_url}/v2.0/"}]
        return web.json_response({"versions": [{"id": "v2.0", "status": "CURRENT", "links": link}]})

    def _image_json(self, image: FakeImage) -> Json:
        return {
            "id": image.id,
            "name": image.name,
            "status": "active",
            "visibility": "public",
            "protected": False,
            "disk_format": "qcow2",
            "container_format": "bare",
            "min_disk": 0,
            "min_ram": 0,
            "size": 1024,
            "owner": PROJECT_ID,
            "tags": [],
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "self": f"/v2/images/{image.id}",
            "file": f"/v2/images/{image.id}/file",
            "schema": "/v2/schemas/image",
        }

    async def _list_images(self, request: web.Request, _: re.Match[str]) -> web.Response:
        with self._lock:
            images = [self._image_json(i) for i in self.images.values()]
        images = _filter(images, request, ("name", "id", "status", "visibility"))
        return web.json_response(
            {"images": images, "first": "/v2/images", "schema": "/v2/schemas/images"}
        )

    async def _get_image(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            image = self.images.get(match["id"])
            if image is None:
                raise FakeHTTPError(404, f"No image found with ID {match['id']}", "itemNotFound")
            return web.json_response(self._image_json(image))

    # --- network ---------------------------------------------------------------------------------

    async def _network_resources(self, request: web.Request, _: re.Match[str]) -> web.Response:
        names = {"networks": "network", "ports": "port", "floatingips": "floatingip"}
        resources = [
            {
                "name": singular,
                "collection": plural,
                "links": [{"rel": "self", "href": f"{self.network_url}/v2.0/{plural}"}],
            }
            for plural, singular in names.items()
        ]
        return web.json_response({"resources": resources})

    async def _list_extensions(self, request: web.Request, _: re.Match[str]) -> web.Response:
        return web.json_response({"extensions": []})

    def _network_json(self, net: FakeNetwork) -> Json:
        return {
            "id": net.id,
            "name": net.name,
            "status": "ACTIVE",
            "admin_state_up": True,
            "router:external": net.external,
            "shared": False,
            "subnets": [net.subnet_id],
            "mtu": 1500,
            "description": "",
            "project_id": PROJECT_ID,
            "tenant_id": PROJECT_ID,
            "tags": [],
        }

    async def _list_networks(self, request: web.Request, _: re.Match[str]) -> web.Response:
        with self._lock:
            nets = [self._network_json(n) for n in self.networks.values()]
        nets = _filter(nets, request, ("id", "name", "router:external", "status", "shared"))
        return web.json_response({"networks": nets})

    async def _get_network(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            net = self.networks.get(match["id"])
            if net is None:
                raise FakeHTTPError(404, f"Network {match['id']} could not be found.", "error")
            return web.json_response({"network": self._network_json(net)})

    def _port_json(self, port: FakePort) -> Json:
        return {
            "id": port.id,
            "name": "",
            "network_id": port.network_id,
            "device_id": port.device_id,
            "device_owner": "compute:nova",
            "mac_address": port.mac,
            "fixed_ips": [
                {"subnet_id": self.networks[port.network_id].subnet_id, "ip_address": port.ip}
            ],
            "status": "ACTIVE",
            "admin_state_up": True,
            "project_id": PROJECT_ID,
            "tenant_id": PROJECT_ID,
            "tags": [],
        }

    async def _list_ports(self, request: web.Request, _: re.Match[str]) -> web.Response:
        with self._lock:
            ports = [self._port_json(p) for p in self.ports.values()]
        ports = _filter(ports, request, ("id", "device_id", "network_id", "device_owner"))
        return web.json_response({"ports": ports})

    async def _get_port(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            port = self.ports.get(match["id"])
            if port is None:
                raise FakeHTTPError(404, f"Port {match['id']} could not be found.", "error")
            return web.json_response({"port": self._port_json(port)})

    def _fip_json(self, fip: FakeFloatingIp) -> Json:
        port = self.ports.get(fip.port_id) if fip.port_id else None
        return {
            "id": fip.id,
            "floating_ip_address": fip.address,
            "floating_network_id": fip.network_id,
            "port_id": fip.port_id,
            "fixed_ip_address": port.ip if port else None,
            "router_id": "fakerouter" if port else None,
            "status": "ACTIVE" if port else "DOWN",
            "description": fip.description,
            "project_id": PROJECT_ID,
            "tenant_id": PROJECT_ID,
            "tags": [],
            "revision_number": 0,
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
        }

    async def _list_fips(self, request: web.Request, _: re.Match[str]) -> web.Response:
        with self._lock:
            fips = [self._fip_json(f) for f in self.floating_ips.values()]
        keys = ("id", "description", "port_id", "floating_network_id", "floating_ip_address")
        return web.json_response({"floatingips": _filter(fips, request, keys)})

    async def _get_fip(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            return web.json_response({"floatingip": self._fip_json(self._fip(match["id"]))})

    def _fip(self, fip_id: str) -> FakeFloatingIp:
        fip = self.floating_ips.get(fip_id)
        if fip is None:
            raise FakeHTTPError(404, f"Floating IP {fip_id} could not be found", "NeutronError")
        return fip

    def _check_port(self, port_id: Any) -> str | None:
        if port_id is None:
            return None
        if port_id not in self.ports:
            raise FakeHTTPError(404, f"Port {port_id} could not be found.", "NeutronError")
        return str(port_id)

    async def _create_fip(self, request: web.Request, _: re.Match[str]) -> web.Response:
        spec = (await self._body(request)).get("floatingip") or {}
        with self._lock:
            net_id = str(spec.get("floating_network_id"))
            net = self.networks.get(net_id)
            if net is None or not net.external:
                message = (
                    f"Bad floatingip request: Network {net_id} is not a valid external network."
                )
                raise FakeHTTPError(400, message, "NeutronError")
            number = next(self._fip_counter)
            fip = FakeFloatingIp(
                id=str(uuid.uuid4()),
                address=f"127.0.{1 + number // 250}.{1 + number % 250}",  # loopback: reachable
                network_id=net.id,
                description=str(spec.get("description") or ""),
                port_id=self._check_port(spec.get("port_id")),
            )
            self.floating_ips[fip.id] = fip
            return web.json_response({"floatingip": self._fip_json(fip)}, status=201)

    async def _update_fip(self, request: web.Request, match: re.Match[str]) -> web.Response:
        spec = (await self._body(request)).get("floatingip") or {}
        with self._lock:
            fip = self._fip(match["id"])
            if "port_id" in spec:
                fip.port_id = self._check_port(spec["port_id"])
            if "description" in spec:
                fip.description = str(spec["description"])
            return web.json_response({"floatingip": self._fip_json(fip)})

    async def _delete_fip(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            self._fip(match["id"])
            del self.floating_ips[match["id"]]
        return web.Response(status=204)


def _filter(items: list[Json], request: web.Request, keys: tuple[str, ...]) -> list[Json]:
    """Neutron/Glance-style exact-match filters on the given query parameters."""
    for key in keys:
        wanted = {v.lower() for v in request.query.getall(key, [])}
        if wanted:
            items = [i for i in items if _as_query(i.get(key)) in wanted]
    return items


def _as_query(value: Any) -> str:
    # Lower-cased on both sides: booleans arrive as "True" or "true".
    return "" if value is None else str(value).lower()
