"""The status page (/, /change/<N>) and the pages of nodes, TEs and publications, with their
JSON API (/api/status, /api/change/<N>, /api/nodes, /api/tes, /api/publications; docs/web.md).

Handlers only fetch (web/sources.py) and render (web/status_view.py, web/infra_view.py).
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from lockmaster.nodepool.specs import pool_specs
from lockmaster.web import sources
from lockmaster.web.context import CTX
from lockmaster.web.errors import bad_request, not_found, unavailable
from lockmaster.web.infra_view import nodes_view, publications_view, tes_view
from lockmaster.web.layout import page
from lockmaster.web.status_view import FilterError, Filters, change_entries, status_view

STATUS_BODY = """<h1>Status</h1>
<form class="toolbar" id="filters" role="search">
  <label>Project <input name="project" id="filter-project" placeholder="e.g. demo/hello"></label>
  <label>Change <input name="change" id="filter-change" placeholder="number" size="8"></label>
  <button type="submit">Filter</button> <a href="/" id="filter-clear">clear</a>
  <span class="muted" id="updated"></span>
</form>
<div id="status" data-change="{change}"><p class="muted">Loading…</p></div>
"""


async def _status(request: web.Request, change: str | None = None) -> dict | web.Response:
    """The view, or the error response (400 bad filter, 503 Temporal down)."""
    ctx = request.app[CTX]
    try:
        filters = Filters.parse(ctx.config, request.query.get("project"),
                                change if change is not None else request.query.get("change"))
    except FilterError as exc:
        return bad_request(str(exc), exc.hint)
    try:
        found = await sources.pipelines(ctx)
        pools, _ = await sources.pools(ctx)
        brokers, _ = await sources.brokers(ctx)
    except sources.TemporalDown as exc:
        return unavailable(str(exc), "start Temporal (lockmaster run) or check temporal.address")
    estimates = await sources.estimates(ctx, found)
    return status_view(found, ctx.config, pools=pools, brokers=brokers, estimates=estimates,
                       filters=filters, now=time.time())


async def api_status(request: web.Request) -> web.Response:
    view = await _status(request)
    if isinstance(view, web.Response):
        return view
    response = web.json_response(view)
    # Every open page asks every 2 s; a 200-item queue is ~300 KiB of JSON, ~10x less gzipped.
    response.enable_compression()
    return response


STREAM_EVERY = 2.0  # seconds between the stream's events, as the page's own polling


async def api_status_stream(request: web.Request) -> web.StreamResponse:
    """/api/status as server-sent events: `event: status` with the view every STREAM_EVERY
    seconds, `event: error` with {error, hint} while it cannot be made (Temporal down); a bad
    filter is a plain 400 before the stream starts."""
    ctx = request.app[CTX]
    try:
        Filters.parse(ctx.config, request.query.get("project"), request.query.get("change"))
    except FilterError as exc:
        return bad_request(str(exc), exc.hint)
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                         "Cache-Control": "no-cache"})
    await stream.prepare(request)
    while True:
        view = await _status(request)
        if isinstance(view, web.Response):
            event, data = "error", view.text or "{}"
        else:
            event, data = "status", json.dumps(view)
        try:
            await stream.write(f"event: {event}\ndata: {data}\n\n".encode())
        except (ConnectionResetError, RuntimeError):  # the client went away
            break
        await asyncio.sleep(STREAM_EVERY)
    return stream


async def api_change(request: web.Request) -> web.Response:
    """One change's rows (its check, its gate item), or 404 when no pipeline has it."""
    number = request.match_info["number"]
    view = await _status(request, change=number)
    if isinstance(view, web.Response):
        return view
    entries = change_entries(view, int(number))
    if not entries:
        return not_found(f"change {number} is in no pipeline now",
                         "it may have finished: see its report in the review system, or "
                         "/api/status for what is queued")
    return web.json_response({"generated_at": view["generated_at"], "change": int(number),
                              "entries": entries})


async def api_nodes(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    try:
        pools, errors = await sources.pools(ctx)
    except sources.TemporalDown as exc:
        return unavailable(str(exc), "start Temporal (lockmaster run) or check temporal.address")
    return web.json_response(nodes_view(pools, pool_specs(ctx.config), errors, time.time()))


async def api_tes(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    try:
        brokers, errors = await sources.brokers(ctx)
    except sources.TemporalDown as exc:
        return unavailable(str(exc), "start Temporal (lockmaster run) or check temporal.address")
    return web.json_response(tes_view(brokers, errors, time.time()))


async def api_publications(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    try:
        queue, recent = await sources.publications(ctx)
    except sources.TemporalDown as exc:
        return unavailable(str(exc), "start Temporal (lockmaster run) or check temporal.address")
    return web.json_response(publications_view(queue, recent, time.time()))


async def status_page(request: web.Request) -> web.Response:
    return page("Status", STATUS_BODY.replace("{change}", ""), scripts=["status.js"],
                active="Status")


async def change_page(request: web.Request) -> web.Response:
    """The deep link of a change: the status page filtered to it, its rows highlighted."""
    number = request.match_info["number"]
    return page(f"Change {number}", STATUS_BODY.replace("{change}", number),
                scripts=["status.js"], active="Status")


def _simple(title: str, element: str, script: str):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        return page(title, f'<h1>{title}</h1><div id="{element}"><p class="muted">Loading…'
                           "</p></div>", scripts=["infra.js", script], active=title)
    return handler


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", status_page)
    app.router.add_get(r"/change/{number:\d+}", change_page)
    app.router.add_get("/nodes", _simple("Nodes", "nodes", "nodes.js"))
    app.router.add_get("/tes", _simple("TEs", "tes", "tes.js"))
    app.router.add_get("/publications", _simple("Publications", "publications",
                                                 "publications.js"))
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/api/status/stream", api_status_stream)
    app.router.add_get(r"/api/change/{number:\d+}", api_change)
    app.router.add_get("/api/nodes", api_nodes)
    app.router.add_get("/api/tes", api_tes)
    app.router.add_get("/api/publications", api_publications)
