"""An HTTP fake of the parts of Nova (compute v2.1), Glance (image v2) and Neutron (network v2.0)
that openstacksdk uses to boot, watch and delete servers and to handle floating IPs.

It runs its own event loop in a thread, so synchronous openstacksdk calls made from any thread
(including the tests' event loop thread) reach it. Keystone is real: register `compute_url`,
`image_url` and `network_url` in its catalog (tests/fixtures/openstack.py does). The fake checks
only that a token is sent, not which one.

Scripted faults are set from Python (`fail_next_servers`, `quota_exceeded_next`, `slow_boot_next`,
`fail_next_deletes`, `fail_requests`); every create and delete call is recorded
(`server_creates`, `server_deletes`) so tests can assert how many servers were booted.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web

from tests.fakes.openstack_compute import ComputeApi
from tests.fakes.openstack_network import NetworkApi
from tests.fakes.openstack_resources import ResourcesApi
from tests.fakes.openstack_state import (
    NO_VALID_HOST,
    CreateCall,
    DeleteCall,
    FakeHTTPError,
    FakeServer,
    Json,
    Quota,
    RequestRecord,
)

__all__ = [
    "NO_VALID_HOST",
    "CreateCall",
    "DeleteCall",
    "FakeOpenStack",
    "FakeServer",
    "Quota",
    "RequestRecord",
]

Handler = Callable[[web.Request, re.Match[str]], Awaitable[web.Response]]

# Version documents answer without a token, as the real services' do.
DISCOVERY = frozenset({"", "/compute", "/compute/v2.1", "/image", "/network", "/network/v2.0"})


class FakeOpenStack(ResourcesApi, ComputeApi, NetworkApi):
    """Nova + Glance + Neutron over HTTP on 127.0.0.1. `start()`/`stop()` or use as a context."""

    def __init__(self, fixed_ip: str = "127.0.0.1") -> None:
        super().__init__(fixed_ip)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = self._route_table()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to start()'s caller
                errors.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="fake-openstack", daemon=True)
        self._thread.start()
        started.wait(timeout=10)
        if errors:
            raise RuntimeError(f"fake OpenStack did not start: {errors[0]}")

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = None
        self._thread = None

    def __enter__(self) -> FakeOpenStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- HTTP plumbing -----------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await self._guarded(request, handler)
        with self._lock:
            self.requests.append(RequestRecord(request.method, request.path, response.status))
        return response

    async def _guarded(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        with self._lock:
            for rule in self._fail_rules:
                if rule.remaining > 0 and rule.pattern.search(request.path):
                    if rule.method in (None, request.method):
                        rule.remaining -= 1
                        return _error(rule.status, "Injected fault", "computeFault")
        if request.path.rstrip("/") not in DISCOVERY and "X-Auth-Token" not in request.headers:
            return _error(401, "The request you have made requires authentication.", "error")
        try:
            return await handler(request)
        except FakeHTTPError as exc:
            return _error(exc.status, exc.message, exc.kind)

    async def _dispatch(self, request: web.Request) -> web.Response:
        path = request.path.rstrip("/") or "/"
        allowed = False
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match:
                allowed = True
                if method == request.method:
                    with self._lock:
                        self._sweep()
                    return await handler(request, match)
        if allowed:
            raise FakeHTTPError(405, f"{request.method} not allowed on {path}", "error")
        raise FakeHTTPError(404, f"The resource could not be found: {path}", "itemNotFound")

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        c, i, n = "/compute/v2.1", "/image/v2", "/network/v2.0"
        table: list[tuple[str, str, Handler]] = [
            ("GET", "/compute", self._compute_versions),
            ("GET", c, self._compute_version),
            ("GET", f"{c}/flavors(?:/detail)?", self._list_flavors),
            ("GET", f"{c}/flavors/(?P<id>[^/]+)", self._get_flavor),
            ("GET", f"{c}/servers(?:/detail)?", self._list_servers),
            ("POST", f"{c}/servers", self._create_server),
            ("GET", f"{c}/servers/(?P<id>[^/]+)", self._get_server),
            ("DELETE", f"{c}/servers/(?P<id>[^/]+)", self._delete_server),
            ("GET", f"{c}/limits", self._limits),
            ("GET", f"{c}/os-keypairs", self._list_keypairs),
            ("GET", "/image", self._image_versions),
            ("GET", f"{i}/images", self._list_images),
            ("GET", f"{i}/images/(?P<id>[^/]+)", self._get_image),
            ("GET", "/network", self._network_versions),
            ("GET", n, self._network_resources),
            ("GET", f"{n}/extensions", self._list_extensions),
            ("GET", f"{n}/networks", self._list_networks),
            ("GET", f"{n}/networks/(?P<id>[^/]+)", self._get_network),
            ("GET", f"{n}/ports", self._list_ports),
            ("GET", f"{n}/ports/(?P<id>[^/]+)", self._get_port),
            ("GET", f"{n}/floatingips", self._list_fips),
            ("POST", f"{n}/floatingips", self._create_fip),
            ("GET", f"{n}/floatingips/(?P<id>[^/]+)", self._get_fip),
            ("PUT", f"{n}/floatingips/(?P<id>[^/]+)", self._update_fip),
            ("DELETE", f"{n}/floatingips/(?P<id>[^/]+)", self._delete_fip),
        ]
        table += self._resource_routes()  # keypairs, security groups, image uploads and tags
        return [(m, re.compile(p), h) for m, p, h in table]

    async def _body(self, request: web.Request) -> Json:
        try:
            body = await request.json()
        except (json.JSONDecodeError, ValueError) as exc:
            raise FakeHTTPError(400, f"Malformed request body: {exc}") from exc
        if not isinstance(body, dict):
            raise FakeHTTPError(400, "Malformed request body: not an object")
        return body


def _error(status: int, message: str, kind: str) -> web.Response:
    # Nova wraps errors as {"<kind>": {"code", "message"}}; Neutron as {"NeutronError": {...}}.
    body = {kind: {"code": status, "message": message}}
    return web.json_response(body, status=status)
