"""The fake OpenStack, plus what onboarding's preflight asks (issue 17): Neutron's quota details
(ports, floating IPs) and Glance's image schema (the disk formats it accepts).

A subclass, so the shared fake (openstack_cloud.py) is unchanged: tests set `network_quota` and
`disk_formats`, and `reset()` puts them back.
"""

from __future__ import annotations

import re

from aiohttp import web

from tests.fakes.openstack_cloud import FakeOpenStack, Handler

# Glance's defaults (glance-api.conf [image_format] disk_formats).
GLANCE_DISK_FORMATS = ["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso",
                       "ploop"]


class OnboardingFakeOpenStack(FakeOpenStack):
    def reset(self) -> None:
        super().reset()
        with self._lock:
            # Neutron's quota limits; -1 is unlimited, as in Neutron.
            self.network_quota: dict[str, int] = {"port": 500, "floatingip": 50}
            self.disk_formats: list[str] = list(GLANCE_DISK_FORMATS)

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        extra: list[tuple[str, str, Handler]] = [
            ("GET", "/network/v2.0/quotas/(?P<id>[^/]+)/details", self._quota_details),
            ("GET", "/image/v2/schemas/image", self._image_schema),
        ]
        return [(m, re.compile(p), h) for m, p, h in extra] + super()._route_table()

    async def _quota_details(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._lock:
            used = {"port": len(self.ports), "floatingip": len(self.floating_ips)}
            quota = {
                name: {"limit": limit, "used": used[name], "reserved": 0}
                for name, limit in self.network_quota.items()
            }
        quota["project_id"] = match["id"]  # type: ignore[assignment]
        return web.json_response({"quota": quota})

    async def _image_schema(self, request: web.Request, _: re.Match[str]) -> web.Response:
        with self._lock:
            formats = list(self.disk_formats)
        schema = {
            "name": "image",
            "properties": {
                "disk_format": {"type": ["null", "string"], "enum": [None, *formats],
                                "description": "Format of the disk"},
                "name": {"type": ["null", "string"], "maxLength": 255},
            },
            "additionalProperties": {"type": "string"},
        }
        return web.json_response(schema)
