"""The status page (/) and the pages of nodes, TEs and publications, with their JSON API."""

from __future__ import annotations

from aiohttp import web

from lockmaster.web.layout import page


async def status_page(request: web.Request) -> web.Response:
    return page("Status", '<h1>Status</h1><div id="status"></div>', active="Status")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", status_page)
