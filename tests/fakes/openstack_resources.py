"""The fake's declarative-resource APIs: Nova keypairs (create, get, delete, with public keys),
Neutron security groups and rules (with tags), and Glance image create / upload / delete with
tags and properties. Mixed into FakeOpenStack (openstack_cloud.py adds `_resource_routes()`).

Counters (`keypair_creates`, `group_creates`, `rule_creates`, `image_creates`) let tests assert
that a retried step made nothing twice.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from tests.fakes.openstack_state import (
    PROJECT_ID,
    FakeCloudState,
    FakeHTTPError,
    FakeImage,
    Json,
)

Handler = Callable[[web.Request, re.Match[str]], Awaitable[web.Response]]

# Glance's own fields; anything else in a create body is an image property.
IMAGE_FIELDS = frozenset(
    {
        "id",
        "name",
        "disk_format",
        "container_format",
        "visibility",
        "tags",
        "min_disk",
        "min_ram",
        "protected",
    }
)
RULE_FIELDS = (
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_id",
    "description",
)


@dataclass
class FakeSecurityGroup:
    id: str
    name: str
    description: str
    tags: list[str] = field(default_factory=list)
    rules: dict[str, Json] = field(default_factory=dict)


@dataclass
class FakeImageMeta:
    disk_format: str
    container_format: str
    tags: list[str]
    properties: dict[str, Any]
    created_at: str
    status: str = "queued"  # active once its data is uploaded
    size: int | None = None


class ResourcesApi(FakeCloudState):
    """State and handlers for keypairs, security groups and images with tags."""

    def reset(self) -> None:
        with self._lock:
            super().reset()
            self.keypair_keys: dict[str, str] = {
                k: "ssh-ed25519 AAAAseed seed" for k in self.keypairs
            }
            self.security_groups: dict[str, FakeSecurityGroup] = {}
            self.image_meta: dict[str, FakeImageMeta] = {}
            self.keypair_creates: list[str] = []
            self.group_creates: list[str] = []
            self.rule_creates: list[str] = []
            self.image_creates: list[str] = []
            self._last_created = datetime(2026, 1, 1, tzinfo=UTC)
            # Neutron's tag-creation extension (tags in a create's body); older clouds refuse.
            self.tags_on_create = True
            self.add_security_group("default", tags=[])  # every project has one, never ours

    # --- test helpers ------------

    def add_security_group(self, name: str, tags: list[str] | None = None) -> FakeSecurityGroup:
        with self._lock:
            group = FakeSecurityGroup(str(uuid.uuid4()), name, "", list(tags or []))
            for ethertype in ("IPv4", "IPv6"):  # Neutron's defaults for a new group
                self._add_rule(group, {"direction": "egress", "ethertype": ethertype})
            self.security_groups[group.id] = group
            return group

    def add_tagged_image(
        self, name: str, tags: list[str], properties: dict[str, str] | None = None
    ) -> FakeImage:
        """An image as another tool (or a crashed upload) left it: active, with tags."""
        with self._lock:
            image = self.add_image(name)
            self.image_meta[image.id] = FakeImageMeta(
                "qcow2", "bare", list(tags), dict(properties or {}), self._stamp(), "active", 4
            )
            return image

    def _stamp(self) -> str:
        # Glance has second resolution; strictly increasing so "newest" is well defined.
        now = max(
            datetime.now(UTC).replace(microsecond=0), self._last_created + timedelta(seconds=1)
        )
        self._last_created = now
        return now.strftime("%Y-%m-%dT%H:%M:%SZ")

    # --- Nova keypairs ------------

    def _keypair_json(self, name: str) -> Json:
        return {
            "name": name,
            "public_key": self.keypair_keys.get(name, ""),
            "type": "ssh",
            "fingerprint": "",
            "user_id": "fakeuser",
        }

    async def _list_keypairs(self, request: web.Request, _: re.Match[str]) -> web.Response:
        with self._lock:
            keys = [{"keypair": self._keypair_json(k)} for k in sorted(self.keypairs)]
        return web.json_response({"keypairs": keys})

    async def _get_keypair(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            if match["name"] not in self.keypairs:
                raise FakeHTTPError(404, f"Keypair {match['name']} not found.", "itemNotFound")
            return web.json_response({"keypair": self._keypair_json(match["name"])})

    async def _create_keypair(self, request: web.Request, _: re.Match[str]) -> web.Response:
        spec = (await self._body(request)).get("keypair") or {}
        name, key = spec.get("name"), spec.get("public_key")
        if not name or not key:
            raise FakeHTTPError(400, "Keypair data is invalid: name and public_key required.")
        with self._lock:
            if name in self.keypairs:
                raise FakeHTTPError(409, f"Key pair '{name}' already exists.", "conflictingRequest")
            self.keypairs.add(name)
            self.keypair_keys[name] = key
            self.keypair_creates.append(name)
            return web.json_response({"keypair": self._keypair_json(name)})

    async def _delete_keypair(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            if match["name"] not in self.keypairs:
                raise FakeHTTPError(404, f"Keypair {match['name']} not found.", "itemNotFound")
            self.keypairs.discard(match["name"])
            self.keypair_keys.pop(match["name"], None)
        return web.Response(status=202)

    # --- Neutron security groups ------------

    def _add_rule(self, group: FakeSecurityGroup, spec: Json) -> Json:
        rule: Json = {f: spec.get(f) for f in RULE_FIELDS}
        rule.update(
            id=str(uuid.uuid4()),
            security_group_id=group.id,
            tenant_id=PROJECT_ID,
            project_id=PROJECT_ID,
        )
        for other in group.rules.values():
            if all(other.get(f) == rule.get(f) for f in RULE_FIELDS if f != "description"):
                raise FakeHTTPError(
                    409,
                    f"Security group rule already exists. Rule id is {other['id']}.",
                    "NeutronError",
                )
        group.rules[rule["id"]] = rule
        return rule

    def _group_json(self, group: FakeSecurityGroup) -> Json:
        return {
            "id": group.id,
            "name": group.name,
            "description": group.description,
            "tags": list(group.tags),
            "tenant_id": PROJECT_ID,
            "project_id": PROJECT_ID,
            "stateful": True,
            "security_group_rules": list(group.rules.values()),
        }

    def _group(self, group_id: str) -> FakeSecurityGroup:
        group = self.security_groups.get(group_id)
        if group is None:
            raise FakeHTTPError(
                404, f"Security group {group_id} could not be found.", "NeutronError"
            )
        return group

    async def _list_groups(self, request: web.Request, _: re.Match[str]) -> web.Response:
        with self._lock:
            groups = [self._group_json(g) for g in self.security_groups.values()]
        for key in ("name", "id"):
            wanted = request.query.getall(key, [])
            if wanted:
                groups = [g for g in groups if g[key] in wanted]
        if "tags" in request.query:  # Neutron: every one of the comma-separated tags
            tags = set(request.query["tags"].split(","))
            groups = [g for g in groups if tags <= set(g["tags"])]
        return web.json_response({"security_groups": groups})

    async def _get_group(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            return web.json_response({"security_group": self._group_json(self._group(match["id"]))})

    async def _create_group(self, request: web.Request, _: re.Match[str]) -> web.Response:
        spec = (await self._body(request)).get("security_group") or {}
        if not spec.get("name"):
            raise FakeHTTPError(400, "Invalid input: security_group.name required.", "NeutronError")
        if "tags" in spec and not self.tags_on_create:
            raise FakeHTTPError(400, "Unrecognized attribute(s) 'tags'", "NeutronError")
        with self._lock:
            group = self.add_security_group(str(spec["name"]), list(spec.get("tags") or []))
            group.description = str(spec.get("description") or "")
            self.group_creates.append(group.name)
            return web.json_response({"security_group": self._group_json(group)}, status=201)

    async def _delete_group(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            self._group(match["id"])
            del self.security_groups[match["id"]]
        return web.Response(status=204)

    async def _set_group_tags(self, request: web.Request, match: re.Match[str]) -> web.Response:
        tags = (await self._body(request)).get("tags")
        if not isinstance(tags, list):
            raise FakeHTTPError(400, "Invalid input: tags must be a list.", "NeutronError")
        with self._lock:
            self._group(match["id"]).tags = [str(t) for t in tags]
        return web.json_response({"tags": tags})

    async def _list_rules(self, request: web.Request, _: re.Match[str]) -> web.Response:
        with self._lock:
            rules = [r for g in self.security_groups.values() for r in g.rules.values()]
        wanted = request.query.getall("security_group_id", [])
        if wanted:
            rules = [r for r in rules if r["security_group_id"] in wanted]
        return web.json_response({"security_group_rules": rules})

    async def _create_rule(self, request: web.Request, _: re.Match[str]) -> web.Response:
        spec = (await self._body(request)).get("security_group_rule") or {}
        with self._lock:
            group = self._group(str(spec.get("security_group_id")))
            rule = self._add_rule(group, spec)
            self.rule_creates.append(rule["id"])
            return web.json_response({"security_group_rule": rule}, status=201)

    async def _delete_rule(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            for group in self.security_groups.values():
                if group.rules.pop(match["id"], None) is not None:
                    return web.Response(status=204)
        raise FakeHTTPError(
            404, f"Security group rule {match['id']} could not be found.", "NeutronError"
        )

    # --- Glance images with tags, properties and data ------------

    def _image_json(self, image: FakeImage) -> Json:
        body: Json = super()._image_json(image)  # type: ignore[misc]
        meta = self.image_meta.get(image.id)
        if meta is not None:
            body.update(meta.properties)
            body.update(
                tags=list(meta.tags),
                status=meta.status,
                disk_format=meta.disk_format,
                container_format=meta.container_format,
                size=meta.size,
                created_at=meta.created_at,
                updated_at=meta.created_at,
            )
        return body

    async def _create_image(self, request: web.Request, _: re.Match[str]) -> web.Response:
        spec = await self._body(request)
        if not spec.get("name") or not spec.get("disk_format"):
            raise FakeHTTPError(400, "name and disk_format are required")
        with self._lock:
            image = self.add_image(str(spec["name"]))
            props = {k: v for k, v in spec.items() if k not in IMAGE_FIELDS}
            self.image_meta[image.id] = FakeImageMeta(
                str(spec["disk_format"]),
                str(spec.get("container_format") or "bare"),
                [str(t) for t in spec.get("tags") or []],
                props,
                self._stamp(),
            )
            self.image_creates.append(image.id)
            return web.json_response(self._image_json(image), status=201)

    async def _upload_image(self, request: web.Request, match: re.Match[str]) -> web.Response:
        data = await request.read()
        with self._lock:
            meta = self.image_meta.get(match["id"])
            if meta is None:
                raise FakeHTTPError(404, f"No image found with ID {match['id']}", "itemNotFound")
            meta.status, meta.size = "active", len(data)
        return web.Response(status=204)

    async def _delete_image(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            if self.images.pop(match["id"], None) is None:
                raise FakeHTTPError(404, f"No image found with ID {match['id']}", "itemNotFound")
            self.image_meta.pop(match["id"], None)
        return web.Response(status=204)

    def _resource_routes(self) -> list[tuple[str, str, Handler]]:
        c, i, n = "/compute/v2.1", "/image/v2", "/network/v2.0"
        return [
            ("POST", f"{c}/os-keypairs", self._create_keypair),
            ("GET", f"{c}/os-keypairs/(?P<name>[^/]+)", self._get_keypair),
            ("DELETE", f"{c}/os-keypairs/(?P<name>[^/]+)", self._delete_keypair),
            ("POST", f"{i}/images", self._create_image),
            ("PUT", f"{i}/images/(?P<id>[^/]+)/file", self._upload_image),
            ("DELETE", f"{i}/images/(?P<id>[^/]+)", self._delete_image),
            ("GET", f"{n}/security-groups", self._list_groups),
            ("POST", f"{n}/security-groups", self._create_group),
            ("GET", f"{n}/security-groups/(?P<id>[^/]+)", self._get_group),
            ("DELETE", f"{n}/security-groups/(?P<id>[^/]+)", self._delete_group),
            ("PUT", f"{n}/security-groups/(?P<id>[^/]+)/tags", self._set_group_tags),
            ("GET", f"{n}/security-group-rules", self._list_rules),
            ("POST", f"{n}/security-group-rules", self._create_rule),
            ("DELETE", f"{n}/security-group-rules/(?P<id>[^/]+)", self._delete_rule),
        ]
