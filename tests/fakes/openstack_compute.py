"""The fake's Nova (compute v2.1): version documents, flavors, keypairs, servers, limits."""

from __future__ import annotations

import re
import uuid

from aiohttp import web

from tests.fakes.openstack_state import (
    PROJECT_ID,
    CreateCall,
    FakeCloudState,
    FakeFlavor,
    FakeHTTPError,
    FakeServer,
    Json,
    now_iso,
)

COMPUTE_MAX_MICROVERSION = "2.96"


class ComputeApi(FakeCloudState):
    """Nova's handlers; routes are in openstack_cloud.py. Shapes follow microversion 2.47+."""

    def _compute_version_doc(self) -> Json:
        return {
            "id": "v2.1",
            "status": "CURRENT",
            "version": COMPUTE_MAX_MICROVERSION,
            "min_version": "2.1",
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{self.compute_url}/"}],
            "media-types": [
                {
                    "base": "application/json",
                    "type": "application/vnd.openstack.compute+json;version=2.1",
                }
            ],
        }

    async def _compute_versions(self, request: web.Request, _: re.Match[str]) -> web.Response:
        return web.json_response({"versions": [self._compute_version_doc()]})

    async def _compute_version(self, request: web.Request, _: re.Match[str]) -> web.Response:
        return web.json_response({"version": self._compute_version_doc()})

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

    # --- compute ---------------------------------------------------------------------------------

    def _flavor_json(self, flavor: FakeFlavor) -> Json:
        return {
            "id": flavor.id,
            "name": flavor.name,
            "vcpus": flavor.vcpus,
            "ram": flavor.ram,
            "disk": flavor.disk,
            "OS-FLV-EXT-DATA:ephemeral": 0,
            "swap": 0,
            "rxtx_factor": 1.0,
            "os-flavor-access:is_public": True,
            "OS-FLV-DISABLED:disabled": False,
            "description": None,
            "extra_specs": {},
            "links": [{"rel": "self", "href": f"{self.compute_url}/flavors/{flavor.id}"}],
        }

    async def _list_flavors(self, request: web.Request, _: re.Match[str]) -> web.Response:
        with self._lock:
            flavors = [self._flavor_json(f) for f in self.flavors.values()]
        return web.json_response({"flavors": flavors})

    async def _get_flavor(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            flavor = self.flavors.get(match["id"])
            if flavor is None:
                raise FakeHTTPError(
                    404, f"Flavor {match['id']} could not be found.", "itemNotFound"
                )
            return web.json_response({"flavor": self._flavor_json(flavor)})

    async def _list_keypairs(self, request: web.Request, _: re.Match[str]) -> web.Response:
        with self._lock:
            keys = [
                {"keypair": {"name": k, "type": "ssh", "fingerprint": ""}} for k in self.keypairs
            ]
        return web.json_response({"keypairs": keys})

    def _server_json(self, server: FakeServer) -> Json:
        status, task = self._status(server)
        addresses: dict[str, list[Json]] = {}
        for port_id in server.port_ids:
            port = self.ports[port_id]
            net = self.networks[port.network_id]
            entries = addresses.setdefault(net.name, [])
            entries.append(_address(port.ip, "fixed", port.mac))
            for fip in self.floating_ips.values():
                if fip.port_id == port_id:
                    entries.append(_address(fip.address, "floating", port.mac))
        body: Json = {
            "id": server.id,
            "name": server.name,
            "status": status,
            "tenant_id": PROJECT_ID,
            "user_id": "fakeuser",
            "metadata": dict(server.metadata),
            "hostId": "" if status == "BUILD" else "fakehost",
            "image": {"id": server.image_id, "links": []} if server.image_id else "",
            "flavor": {
                "original_name": server.flavor.name,
                "vcpus": server.flavor.vcpus,
                "ram": server.flavor.ram,
                "disk": server.flavor.disk,
                "ephemeral": 0,
                "swap": 0,
                "extra_specs": {},
            },
            "created": server.created,
            "updated": now_iso(),
            "addresses": addresses if status != "BUILD" else {},
            "accessIPv4": self.fixed_ip if status == "ACTIVE" else "",
            "accessIPv6": "",
            "key_name": server.key_name,
            "OS-EXT-STS:task_state": task,
            "OS-EXT-STS:vm_state": status.lower() if status != "BUILD" else "building",
            "OS-EXT-STS:power_state": 1 if status == "ACTIVE" else 0,
            "OS-EXT-AZ:availability_zone": "nova",
            "OS-DCF:diskConfig": "MANUAL",
            "progress": 0,
            "config_drive": "",
            "locked": False,
            "description": None,
            "tags": [],
            "security_groups": [{"name": "default"}],
            "os-extended-volumes:volumes_attached": [],
            "links": [{"rel": "self", "href": f"{self.compute_url}/servers/{server.id}"}],
        }
        if status == "ERROR":
            body["fault"] = {"code": 500, "message": server.error, "created": server.created}
        return body

    async def _list_servers(self, request: web.Request, _: re.Match[str]) -> web.Response:
        name = request.query.get("name")
        status = request.query.get("status")
        with self._lock:
            servers = [self._server_json(s) for s in self.servers.values()]
        if name is not None:  # Nova matches `name` as a regular expression
            servers = [s for s in servers if re.search(name, s["name"])]
        if status is not None:
            servers = [s for s in servers if s["status"] == status.upper()]
        return web.json_response({"servers": servers})

    async def _get_server(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            server = self.servers.get(match["id"])
            if server is None:
                raise FakeHTTPError(
                    404, f"Instance {match['id']} could not be found.", "itemNotFound"
                )
            return web.json_response({"server": self._server_json(server)})

    async def _create_server(self, request: web.Request, _: re.Match[str]) -> web.Response:
        body = await self._body(request)
        spec = body.get("server")
        if not isinstance(spec, dict) or not spec.get("name"):
            raise FakeHTTPError(400, "Invalid input for field/attribute server.")
        with self._lock:
            try:
                server = self._boot(spec)
            except FakeHTTPError as exc:
                self.server_creates.append(CreateCall(spec["name"], body, exc.status, None))
                raise
            self.server_creates.append(CreateCall(server.name, body, 202, server.id))
            reply = {
                "id": server.id,
                "links": [{"rel": "self", "href": f"{self.compute_url}/servers/{server.id}"}],
                "OS-DCF:diskConfig": "MANUAL",
                "security_groups": [{"name": "default"}],
                "adminPass": uuid.uuid4().hex[:12],
            }
        return web.json_response({"server": reply}, status=202)

    async def _delete_server(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            status = self._request_delete(match["id"])
        return web.Response(status=status)

    async def _limits(self, request: web.Request, _: re.Match[str]) -> web.Response:
        with self._lock:
            live = list(self.servers.values())
            absolute = {
                "maxTotalInstances": self.quota.instances,
                "maxTotalCores": self.quota.cores,
                "maxTotalRAMSize": self.quota.ram,
                "maxServerMeta": 128,
                "maxTotalKeypairs": 100,
                "maxServerGroups": 10,
                "maxServerGroupMembers": 10,
                "totalInstancesUsed": len(live),
                "totalCoresUsed": sum(s.flavor.vcpus for s in live),
                "totalRAMUsed": sum(s.flavor.ram for s in live),
                "totalServerGroupsUsed": 0,
            }
        return web.json_response({"limits": {"absolute": absolute, "rate": []}})


def _address(ip: str, kind: str, mac: str) -> Json:
    return {"version": 4, "addr": ip, "OS-EXT-IPS:type": kind, "OS-EXT-IPS-MAC:mac_addr": mac}
