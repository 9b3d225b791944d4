"""The web application: one aiohttp Application, its routes contributed by ROUTE_MODULES.

Each module in ROUTE_MODULES has `def add_routes(app: web.Application) -> None` and adds its
own pages and /api/ endpoints; handlers find the shared WebContext at `request.app[CTX]`.
Static files (the shared layout, CSS, JS) are served from lockmaster/web/static at /static/.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from aiohttp import web

from lockmaster.web.context import CTX, WebContext

STATIC = Path(__file__).parent / "static"

# Modules contributing routes, imported by name so that one part missing (being written) is a
# clear error at startup rather than an import cycle. Add yours here.
ROUTE_MODULES: list[str] = [
    "lockmaster.web.status_pages",
    "lockmaster.web.logs_pages",
    "lockmaster.web.builds_pages",
    "lockmaster.web.signatures_pages",
    "lockmaster.web.metrics_route",
]


@web.middleware
async def _json_errors(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """/api/ answers errors as JSON ({"error", "hint"}), never as aiohttp's HTML pages."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        hint = "see docs/web.md for the endpoints" if exc.status == 404 else ""
        return web.json_response({"error": f"{exc.reason}: {request.path}", "hint": hint},
                                 status=exc.status)


def build_app(ctx: WebContext) -> web.Application:
    app = web.Application(middlewares=[_json_errors])
    app[CTX] = ctx
    for name in ROUTE_MODULES:
        importlib.import_module(name).add_routes(app)
    app.router.add_static("/static/", STATIC)
    return app
