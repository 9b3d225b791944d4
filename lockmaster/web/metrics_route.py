"""GET /metrics of the web service: the process's Prometheus registry (docs/metrics.md).

In `lockmaster run` that is the workers' registry (builds, launches, the Temporal SDK's
metrics, the workflows' state); in a `lockmaster web` of its own, the web process's SDK
metrics and the workflows' state, read through the web's Temporal client at scrape time.
Temporal unreachable: the rest is served, and lockmaster_workflow_state_errors_total counts it.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from lockmaster.metrics.registry import CONTENT_TYPE, exposition
from lockmaster.metrics.server import (
    attach_workflow_state,
    install_process_metrics,
    workflow_state,
)
from lockmaster.web.context import CTX

log = logging.getLogger(__name__)


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    state = workflow_state()
    if state is None:
        try:
            from lockmaster.web.sources import client_of

            state = attach_workflow_state(await client_of(ctx), ctx.config)
        except Exception as exc:  # Temporal down: serve the rest
            log.debug("metrics: no Temporal client for the workflows' state: %s", exc)
    if state is not None and state.loop is asyncio.get_running_loop():
        # Its queries run on this loop: await them here; rendering (in a thread) then finds
        # them cached instead of waiting on this loop.
        await state.refresh_if_stale()
    body = await asyncio.to_thread(exposition)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


def add_routes(app: web.Application) -> None:
    # Before the web's Temporal client connects (on the first request): the SDK's runtime
    # then records its metrics into the registry.
    install_process_metrics()
    app.router.add_get("/metrics", metrics)
