"""The log viewer: `/logs/<path>` and `/api/logs/<path>` (docs/web.md, "Logs").

The page shows a log from the log store with numbered lines (each an anchor: #L42, a range
#L40-L50 is highlighted; shift-click a second number to make one), errors red, warnings yellow,
debug output dim. The first CHUNK bytes come with the page; static/logs.js fetches the rest from
the API and, while the build runs, tails it: `/api/logs/<path>?offset=N` answers the whole lines
after byte N, where to ask next, and whether the build is still running.

"Running": the results database holds no build for the log's directory (builds are recorded
when they finish), the log's end does not show the executor's last words ("RESULT: ...",
"NODE_FAILURE: ...", "ABORTED"), and the file changed in the last RUNNING_WINDOW seconds (an
executor appends as output arrives; the http store receives it every logs.store.live-interval
seconds). A build whose executor died without a result stops counting as running when its log
has not grown for that long.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

from aiohttp import web

from lockmaster.web.context import CTX, WebContext
from lockmaster.web.errors import bad_request, json_error, not_found
from lockmaster.web.layout import page
from lockmaster.web.log_render import TAIL, Classifier, ended, split_lines
from lockmaster.web.log_store import (
    CHUNK,
    BadLogPath,
    LogNotFound,
    LogSlice,
    LogStoreUnavailable,
    age,
    clean_path,
    store_for,
)

# Seconds without growth after which a log that shows no end is taken as finished: a build whose
# executor died writes no result line. Longer than a quiet job step (a silent compile).
RUNNING_WINDOW = 3 * 3600.0
# After the executor's last line it gives the nodes back and collects artifacts, writing a few
# more lines: a log written in the last SETTLE seconds is followed on.
SETTLE = 30.0
LOG_STORE = web.AppKey("lockmaster-log-store", object)  # tests may put a store here


def _store(request: web.Request) -> Any:
    store = request.app.get(LOG_STORE)
    if store is None:
        store = store_for(request.app[CTX].config)
    return store


async def _build(ctx: WebContext, relative: str) -> dict[str, Any] | None:
    """The recorded build whose log directory holds `relative` (None: no database, or no
    build recorded for it yet: builds are recorded when they finish)."""
    if ctx.results is None:
        return None
    from lockmaster.web.build_lookup import build_for_log  # the results part is optional

    return await build_for_log(ctx.results, relative)


async def _running(store: Any, relative: str, build: dict[str, Any] | None,
                   piece: LogSlice) -> bool:
    """Whether the log's build still runs (see the module's docstring)."""
    if build is not None:
        return False
    seconds = age(piece.mtime)
    if seconds is None or seconds >= RUNNING_WINDOW:
        return False
    if seconds < SETTLE:
        return True  # written just now: clean-up lines may follow the last line
    if piece.offset + len(piece.data) >= piece.size:
        tail = piece.data[-TAIL:]
    else:
        try:
            tail = (await store.read(relative, max(0, piece.size - TAIL), TAIL)).data
        except (BadLogPath, LogNotFound, LogStoreUnavailable):
            return True  # (replaced or unreachable meanwhile) the next poll knows better
    return not ended(tail)


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadParam(f"{name}={raw!r} is not a whole number",
                        f"give {name} as a whole number from {low} to {high}") from None
    if not low <= value <= high:
        raise _BadParam(f"{name}={value} is out of range", f"{name} goes from {low} to {high}")
    return value


class _BadParam(ValueError):
    def __init__(self, error: str, hint: str) -> None:
        super().__init__(error)
        self.hint = hint


def _path_error(exc: Exception) -> web.Response:
    if isinstance(exc, BadLogPath):
        return bad_request(str(exc), "log paths are relative to the log store, without '.' or "
                                     "'..' segments (as in a build's log URL)")
    if isinstance(exc, LogNotFound):
        return not_found(str(exc), "the build may not have started yet, or its logs were "
                                   "removed; /builds lists builds with their logs")
    return json_error(502, str(exc), "check that the log store server (logs.store.url) is up")


async def api_log(request: web.Request) -> web.Response:
    """A slice of a log as whole lines, or a directory's entries."""
    ctx = request.app[CTX]
    try:
        relative = clean_path(request.match_info["path"])
        offset = _int_param(request, "offset", 0, 0, 2**62)
        limit = _int_param(request, "limit", CHUNK, 1, CHUNK)
    except _BadParam as exc:
        return bad_request(str(exc), exc.hint)
    except (BadLogPath, LogNotFound) as exc:
        return _path_error(exc)
    store = _store(request)
    try:
        if relative.endswith("/"):
            entries = await store.listing(relative)
            return web.json_response({"path": relative, "entries": [
                {"name": e.name, "size": e.size, "url": f"/logs/{quote(relative + e.name)}"}
                for e in entries]})
        piece = await store.read(relative, offset, limit)
    except (BadLogPath, LogNotFound, LogStoreUnavailable) as exc:
        return _path_error(exc)
    if offset > piece.size:
        # The log was put anew (a retried build starts it over): the reader starts again.
        return json_error(416, f"offset {offset} is past the end of {relative} "
                               f"({piece.size} bytes)",
                          "the log was replaced (a new try of the build): read it again from "
                          "offset 0")
    running = await _running(store, relative, await _build(ctx, relative), piece)
    at_end = not running and offset + len(piece.data) >= piece.size
    lines = split_lines(piece.data, at_end=at_end, full=len(piece.data) >= limit)
    classify = Classifier()
    next_offset = offset + lines.consumed
    return web.json_response({
        "path": relative,
        "offset": offset,
        "next_offset": next_offset,
        "size": piece.size,
        "lines": [{"text": line, "severity": classify(line)} for line in lines.lines],
        "continued": lines.continued,
        "running": running,
        "complete": not running and next_offset >= piece.size,
    })


def _line_html(number: int, text: str, severity: str) -> str:
    cls = f"line {severity}" if severity else "line"
    return (f'<span class="{cls}" id="L{number}"><a class="ln" href="#L{number}">{number}</a>'
            f'<span class="t">{html.escape(text)}</span></span>')  # block: no "\n" between


def _crumbs(relative: str) -> str:
    parts = relative.rstrip("/").split("/")
    links = ['<a href="/builds">builds</a>']
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        target = "/".join(parts[:index + 1]) + ("" if last and not relative.endswith("/")
                                                else "/")
        links.append(html.escape(part) if last
                     else f'<a href="/logs/{quote(target)}">{html.escape(part)}</a>')
    return " / ".join(links)


def _error_page(exc: Exception) -> web.Response:
    status = 400 if isinstance(exc, BadLogPath) else 404 if isinstance(exc, LogNotFound) else 502
    body = (f'<h1>Log</h1><div class="error-banner" role="alert">{html.escape(str(exc))}</div>'
            '<p><a href="/builds">Find the build on the builds page</a>.</p>')
    return page("Log", body, active="Builds", status=status)


def _build_line(build: dict[str, Any] | None) -> str:
    if build is None:
        return ""
    uuid = html.escape(build["uuid"])
    return (f'<p>Build <a href="/build/{quote(build["uuid"])}">{uuid}</a> of job '
            f'<a href="/job/{quote(build["job"])}">{html.escape(build["job"])}</a>: '
            f'<span class="{html.escape(build["result"])}">{html.escape(build["result"])}'
            "</span></p>")


def _public_url(ctx: WebContext, relative: str) -> str:
    return f"{ctx.config.logs.url.rstrip('/')}/{quote(relative)}"


async def log_page(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    raw = request.match_info["path"]
    try:
        relative = clean_path(raw)
    except (BadLogPath, LogNotFound) as exc:
        return _error_page(exc)
    store = _store(request)
    try:
        if relative.endswith("/"):
            return await _listing_page(ctx, store, relative)
        piece = await store.read(relative, 0, CHUNK)
    except LogNotFound as exc:
        if not relative.endswith("/") and "is a directory" in str(exc):
            raise web.HTTPFound(f"/logs/{quote(relative)}/") from None
        return _error_page(exc)
    except (BadLogPath, LogStoreUnavailable) as exc:
        return _error_page(exc)
    build = await _build(ctx, relative)
    running = await _running(store, relative, build, piece)
    at_end = not running and len(piece.data) >= piece.size
    lines = split_lines(piece.data, at_end=at_end, full=len(piece.data) >= CHUNK)
    classify = Classifier()
    body_lines = "".join(_line_html(n, line, classify(line))
                         for n, line in enumerate(lines.lines, start=1))
    more = running or lines.consumed < piece.size
    state = ("running: new lines appear as they arrive" if running
             else f"{piece.size} bytes" + (", loading the rest" if more else ""))
    body = f"""<link rel="stylesheet" href="/static/logs.css">
<h1 class="crumbs">{_crumbs(relative)}</h1>
{_build_line(build)}
<div class="toolbar">
<span id="log-state" class="{'running' if running else 'muted'}">{html.escape(state)}</span>
<label><input type="checkbox" id="follow"{' checked' if running else ''}> follow the end</label>
<button type="button" id="next-error">next error</button>
<a href="{html.escape(_public_url(ctx, relative))}">raw</a>
<span class="muted">click a line number to link to it; shift-click another for a range</span>
</div>
<pre id="log" class="log" data-path="{html.escape(quote(relative))}"
 data-offset="{lines.consumed}" data-lines="{len(lines.lines)}"
 data-continued="{int(lines.continued)}" data-more="{int(more)}">{body_lines}</pre>"""
    return page(relative.rsplit("/", 1)[-1], body, scripts=["logs.js"], active="Builds")


async def _listing_page(ctx: WebContext, store: Any, relative: str) -> web.Response:
    entries = await store.listing(relative)
    rows = "".join(
        f'<tr><td><a href="/logs/{quote(relative + e.name)}">{html.escape(e.name)}</a></td>'
        f'<td>{"" if e.size is None else e.size}</td></tr>' for e in entries)
    body = f"""<link rel="stylesheet" href="/static/logs.css">
<h1 class="crumbs">{_crumbs(relative)}</h1>
<table class="listing"><thead><tr><th>name</th><th>bytes</th></tr></thead>
<tbody>{rows or '<tr><td colspan="2" class="muted">empty</td></tr>'}</tbody></table>
<p><a href="{html.escape(_public_url(ctx, relative))}">this directory in the log store</a></p>"""
    return page(relative, body, active="Builds")


async def log_by_url(request: web.Request) -> web.Response:
    """`/logs?url=<a build's log URL>` -> the viewer for its job-output.txt (how the status page
    links a running job). Only URLs under this deployment's logs.url: never a redirect
    elsewhere."""
    ctx = request.app[CTX]
    url = request.query.get("url", "")
    base = ctx.config.logs.url.rstrip("/") + "/"
    if not url.startswith(base) or not url[len(base):].strip("/"):
        body = ('<h1>Log</h1><div class="error-banner" role="alert">'
                f"{html.escape(url or 'no url given')} is not a log URL of this deployment "
                f"(they start with {html.escape(base)})</div>"
                + (f'<p><a href="{html.escape(url)}">open it as it is</a></p>'
                   if url.startswith(("http://", "https://")) else ""))
        return page("Log", body, active="Builds", status=400)
    relative = url[len(base):].split("?")[0].split("#")[0]
    if relative.endswith("/"):
        relative += "job-output.txt"  # a build's log URL is its directory
    raise web.HTTPFound(f"/logs/{relative}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/logs", log_by_url)
    app.router.add_get("/logs/{path:.+}", log_page)
    app.router.add_get("/api/logs/{path:.+}", api_log)
