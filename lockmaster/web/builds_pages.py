"""Build history: the JSON API over the results database and the pages that read it
(docs/web.md, "Build history").

    /api/builds, /api/builds/<uuid>, /api/buildsets, /api/buildsets/<uuid>,
    /api/jobs/<job>/trends
    /builds, /buildsets (filters and pages drawn by static/history.js from the API),
    /build/<uuid>, /buildset/<uuid>, /job/<name> (drawn here, from the same queries)

Filters are the results package's (results/queries.py): a bad value is HTTP 400
{"error", "hint"}, an unknown uuid 404, no results database configured 503.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from aiohttp import web

from lockmaster.model.results import BUILDSET_RESULTS
from lockmaster.web.charts import Series, line_chart
from lockmaster.web.context import CTX, WebContext
from lockmaster.web.errors import bad_request, not_found, unavailable
from lockmaster.web.layout import page

T = TypeVar("T")

FILTER_HINT = ("filters: project, change, patchset, pipeline, queue, job, result, voting, "
               "final, since, until (ISO 8601 dates or times, UTC), limit (1-1000), offset, "
               "completed_since (docs/web.md)")
NO_DB = ("no results database is configured", "set results.url in lockmaster.yaml "
         "(docs/results.md) and restart lockmaster web")


class _NoDB(Exception):
    pass


async def _query(ctx: WebContext, fn: Callable[..., T], *args: Any) -> T:
    if ctx.results is None:
        raise _NoDB
    if any(isinstance(a, str) and "\x00" in a for a in args):
        # A uuid or job name with NUL names nothing (and PostgreSQL refuses it in text).
        return await asyncio.to_thread(_nothing, fn)
    return await asyncio.to_thread(fn, ctx.results, *args)


def _nothing(fn: Callable[..., Any]) -> Any:
    """What `fn` answers for a key that matches nothing."""
    if fn.__name__ in ("get_build", "get_buildset"):
        return None
    if fn.__name__ == "_job_known":
        return False
    from lockmaster.results.queries import JobTrends

    return JobTrends(job="", project=None, pipeline=None, days=[])


def log_view(ctx: WebContext, log_url: str | None) -> str | None:
    """The viewer's address for a build's log URL (None: not in this deployment's store)."""
    if not log_url:
        return None
    base = ctx.config.logs.url.rstrip("/") + "/"
    if not log_url.startswith(base):
        return None
    relative = log_url[len(base):].strip("/")
    return f"/logs/{quote(relative)}/job-output.txt" if relative else None


def build_json(ctx: WebContext, build: Any) -> dict[str, Any]:
    data = build.model_dump(mode="json")
    data["log_view"] = log_view(ctx, build.log_url)
    data["url"] = f"/build/{quote(build.uuid)}"
    return data


def buildset_json(buildset: Any) -> dict[str, Any]:
    data = buildset.model_dump(mode="json")
    data["url"] = f"/buildset/{quote(buildset.uuid)}"
    return data


# The database's integer columns: a larger number cannot match and must not reach the driver
# (SQLite and PostgreSQL raise on it).
_INT_BOUNDS = {"change": 2**31 - 1, "patchset": 2**31 - 1, "completed_since": 2**63 - 1}


def _checked(query: Any) -> Any:
    """The query parameters, after refusing integers the database columns cannot hold."""
    from lockmaster.results.queries import BadFilter

    for name, value in query.items():
        if "\x00" in value or "\x00" in name:  # PostgreSQL refuses NUL in text
            raise BadFilter(f"bad filter: {name}: a NUL character is not allowed")
    for name, bound in _INT_BOUNDS.items():
        raw = query.get(name, "").strip()
        if raw.lstrip("-").isdigit() and int(raw) > bound:
            raise BadFilter(f"bad filter: {name}: {raw} is larger than {bound}")
    return query


async def api_builds(request: web.Request) -> web.Response:
    from lockmaster.results.queries import BadFilter, BuildFilter, list_builds

    ctx = request.app[CTX]
    try:
        found = await _query(ctx, list_builds, BuildFilter.parse(_checked(request.query)))
    except BadFilter as exc:
        return bad_request(str(exc), FILTER_HINT)
    except _NoDB:
        return unavailable(*NO_DB)
    return web.json_response({
        "builds": [build_json(ctx, b) for b in found.builds],
        "next_offset": found.next_offset,
        "next_completed_since": found.next_completed_since})


async def api_build(request: web.Request) -> web.Response:
    from lockmaster.results.queries import get_build

    ctx = request.app[CTX]
    uuid = request.match_info["uuid"]
    try:
        build = await _query(ctx, get_build, uuid)
    except _NoDB:
        return unavailable(*NO_DB)
    if build is None:
        return not_found(f"no build {uuid!r} in the results database",
                         "builds are recorded when they finish; /api/builds lists them")
    return web.json_response(build_json(ctx, build))


async def api_buildsets(request: web.Request) -> web.Response:
    from lockmaster.results.queries import BadFilter, BuildsetFilter, list_buildsets

    ctx = request.app[CTX]
    try:
        found = await _query(ctx, list_buildsets, BuildsetFilter.parse(_checked(request.query)))
    except BadFilter as exc:
        return bad_request(str(exc), FILTER_HINT.replace("job, ", "").replace(
            "voting, final, ", ""))
    except _NoDB:
        return unavailable(*NO_DB)
    return web.json_response({
        "buildsets": [buildset_json(b) for b in found.buildsets],
        "next_offset": found.next_offset,
        "next_completed_since": found.next_completed_since})


async def api_buildset(request: web.Request) -> web.Response:
    from lockmaster.results.queries import get_buildset

    ctx = request.app[CTX]
    uuid = request.match_info["uuid"]
    try:
        found = await _query(ctx, get_buildset, uuid)
    except _NoDB:
        return unavailable(*NO_DB)
    if found is None:
        return not_found(f"no buildset {uuid!r} in the results database",
                         "buildsets are recorded when they report; /api/buildsets lists them")
    buildset, builds = found
    return web.json_response({**buildset_json(buildset),
                              "builds": [build_json(ctx, b) for b in builds]})


_TREND_PARAMS = {"project", "pipeline", "days"}


async def _trends(request: web.Request) -> Any:
    """job_trends for the request; BadFilter on bad parameters."""
    from lockmaster.results.queries import BadFilter, job_trends

    unknown = sorted(set(request.query) - _TREND_PARAMS)
    if unknown:
        raise BadFilter(f"bad filter: unknown parameter(s) {', '.join(unknown)}")
    raw_days = request.query.get("days") or "30"
    try:
        days = int(raw_days)
    except ValueError:
        raise BadFilter(f"bad filter: days={raw_days!r} is not a whole number") from None
    ctx = request.app[CTX]
    job = request.match_info["job"]
    trends = await _query(ctx, job_trends, job, request.query.get("project") or None,
                          request.query.get("pipeline") or None, days)
    if not trends.days and not await _query(ctx, _job_known, job) and not any(
            j.name == job for j in ctx.config.jobs):
        raise _UnknownJob(job)
    return trends


class _UnknownJob(LookupError):
    def __init__(self, job: str) -> None:
        super().__init__(f"no job {job!r}: it is not configured and no build of it is recorded")
        self.hint = "job names are case-sensitive; /builds lists the builds with their jobs"


def _job_known(db: Any, job: str) -> bool:
    """Whether any build of `job` is recorded (its trends may be empty for the window)."""
    from sqlalchemy import select

    from lockmaster.results.schema import Build

    with db.reading() as conn:
        return conn.scalar(select(Build.id).where(Build.job == job).limit(1)) is not None


async def api_job_trends(request: web.Request) -> web.Response:
    from lockmaster.results.queries import BadFilter

    try:
        trends = await _trends(request)
    except BadFilter as exc:
        return bad_request(str(exc), "parameters: project, pipeline, days (1-366)")
    except _UnknownJob as exc:
        return not_found(str(exc), exc.hint)
    except _NoDB:
        return unavailable(*NO_DB)
    return web.json_response(trends.model_dump(mode="json"))


# --- pages ------------------------------------------------------------------------------------

_BUILD_FIELDS = [("project", "text"), ("change", "number"), ("pipeline", "text"),
                 ("job", "text"), ("result", "text"), ("since", "date"), ("until", "date")]
_RESULTS = ["SUCCESS", "FAILURE", "TIMED_OUT", "NODE_FAILURE", "RETRY", "RETRY_LIMIT",
            "ABORTED", "SKIPPED", "ERROR", "CANCELED"]
_BUILDSET_RESULTS = list(BUILDSET_RESULTS)


def _filter_form(request: web.Request, kind: str) -> str:
    fields = [f for f in _BUILD_FIELDS if kind == "builds" or f[0] != "job"]
    results = _RESULTS if kind == "builds" else _BUILDSET_RESULTS
    inputs = []
    for name, kind_ in fields:
        value = html.escape(request.query.get(name, ""))
        if name == "result":
            options = "".join(f'<option{" selected" if r == request.query.get(name) else ""}>'
                              f"{r}</option>" for r in results)
            inputs.append(f'<label>result <select name="result"><option value="">any</option>'
                          f"{options}</select></label>")
        else:
            inputs.append(f'<label>{name} <input name="{name}" type="{kind_}" '
                          f'value="{value}"></label>')
    return (f'<form id="filters" class="toolbar filters" data-kind="{kind}">'
            + "".join(inputs) + '<button type="submit">filter</button></form>')


async def builds_page(request: web.Request) -> web.Response:
    body = (f'<link rel="stylesheet" href="/static/history.css"><h1>Builds</h1>'
            f'{_filter_form(request, "builds")}<div id="history"></div>')
    return page("Builds", body, scripts=["history.js"], active="Builds")


async def buildsets_page(request: web.Request) -> web.Response:
    body = (f'<link rel="stylesheet" href="/static/history.css"><h1>Buildsets</h1>'
            f'{_filter_form(request, "buildsets")}<div id="history"></div>')
    return page("Buildsets", body, scripts=["history.js"], active="Buildsets")


def _error_page(title: str, status: int, error: str, hint: str) -> web.Response:
    body = (f"<h1>{html.escape(title)}</h1><div class=\"error-banner\" role=\"alert\">"
            f"{html.escape(error)}</div><p class=\"muted\">{html.escape(hint)}</p>")
    return page(title, body, active="Builds", status=status)


def _e(value: Any) -> str:
    return "" if value is None else html.escape(str(value))


def _dl(pairs: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in pairs
                                          if v) + "</dl>"


def _builds_table(ctx: WebContext, builds: list[Any]) -> str:
    rows = []
    for b in builds:
        view = log_view(ctx, b.log_url)
        log = f'<a href="{_e(view)}">log</a>' if view else ""
        known = ", ".join(f'<a href="{_e(k.bug)}">{_e(k.signature)}</a>'
                          for k in b.known_failures)
        rows.append(
            f'<tr><td><a href="/build/{quote(b.uuid)}">{_e(b.uuid[:12])}</a></td>'
            f'<td><a href="/job/{quote(b.job)}">{_e(b.job)}</a></td>'
            f'<td class="{_e(b.result)}">{_e(b.result)}</td><td>{_e(b.attempt)}</td>'
            f"<td>{_duration(b.duration)}</td><td>{_e(b.end_time and b.end_time.isoformat())}"
            f"</td><td>{log}</td><td>{known}</td></tr>")
    return ("<table><thead><tr><th>build</th><th>job</th><th>result</th><th>attempt</th>"
            "<th>duration</th><th>ended</th><th>log</th><th>known failure</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes \
        else f"{secs}s"


async def build_page(request: web.Request) -> web.Response:
    from lockmaster.results.queries import get_build

    ctx = request.app[CTX]
    uuid = request.match_info["uuid"]
    try:
        b = await _query(ctx, get_build, uuid)
    except _NoDB:
        return _error_page("Build", 503, *NO_DB)
    if b is None:
        return _error_page("Build", 404, f"no build {uuid!r} in the results database",
                           "builds are recorded when they finish; see /builds")
    view = log_view(ctx, b.log_url)
    facts = _dl([
        ("result", f'<span class="{_e(b.result)}">{_e(b.result)}</span>'),
        ("job", f'<a href="/job/{quote(b.job)}">{_e(b.job)}</a>'),
        ("project", f'<a href="/builds?{urlencode({"project": b.project})}">'
                    f"{_e(b.project)}</a>"),
        ("change", f'<a href="/builds?{urlencode({"change": b.change})}">'
                   f"{b.change},{b.patchset}</a>"),
        ("pipeline", _e(b.pipeline) + (f" (queue {_e(b.queue)})" if b.queue else "")),
        ("buildset", f'<a href="/buildset/{quote(b.buildset_uuid)}">'
                     f"{_e(b.buildset_uuid)}</a>"),
        ("attempt", _e(b.attempt)), ("voting", "yes" if b.voting else "no"),
        ("started", _e(b.start_time and b.start_time.isoformat())),
        ("ended", _e(b.end_time and b.end_time.isoformat())),
        ("duration", _duration(b.duration)),
        ("node", _e(" ".join(x for x in (b.node_provider, b.node_label, b.node_name) if x))),
        ("tested with", _e(b.changes_key)), ("message", _e(b.message)),
        ("log", f'<a href="{_e(view)}">view the log</a> · <a href="{_e(b.log_url)}">raw</a>'
         if view else f'<a href="{_e(b.log_url)}">{_e(b.log_url)}</a>' if b.log_url else ""),
        ("known failures", ", ".join(f'<a href="{_e(k.bug)}">{_e(k.signature)}</a>'
                                     for k in b.known_failures)),
    ])
    body = (f'<link rel="stylesheet" href="/static/history.css"><h1>Build {_e(b.uuid)}</h1>'
            f"{facts}")
    return page(f"Build {b.uuid[:12]}", body, active="Builds")


async def buildset_page(request: web.Request) -> web.Response:
    from lockmaster.results.queries import get_buildset

    ctx = request.app[CTX]
    uuid = request.match_info["uuid"]
    try:
        found = await _query(ctx, get_buildset, uuid)
    except _NoDB:
        return _error_page("Buildset", 503, *NO_DB)
    if found is None:
        return _error_page("Buildset", 404, f"no buildset {uuid!r} in the results database",
                           "buildsets are recorded when they report; see /buildsets")
    s, builds = found
    facts = _dl([
        ("result", f'<span class="{_e(s.result)}">{_e(s.result)}</span>'),
        ("project", _e(s.project)), ("change", f"{s.change},{s.patchset}"),
        ("review", f'<a href="{_e(s.change_url)}">{_e(s.change_url)}</a>'
         if s.change_url else ""),
        ("pipeline", _e(s.pipeline) + (f" (queue {_e(s.queue)})" if s.queue else "")),
        ("tested with", _e(s.changes_key)), ("reason", _e(s.reason)),
        ("builds restarted behind", _e(s.restarted_behind or "")),
        ("ended", _e(s.end_time and s.end_time.isoformat())),
    ])
    message = f'<pre class="report">{_e(s.message)}</pre>' if s.message else ""
    body = (f'<link rel="stylesheet" href="/static/history.css"><h1>Buildset {_e(s.uuid)}</h1>'
            f"{facts}{message}<h2>Builds</h2>{_builds_table(ctx, builds)}")
    return page(f"Buildset {s.uuid[:12]}", body, active="Buildsets")


async def job_page(request: web.Request) -> web.Response:
    from lockmaster.results.queries import BadFilter

    name = request.match_info["job"]
    try:
        trends = await _trends(request)
    except BadFilter as exc:
        return _error_page(f"Job {name}", 400, str(exc),
                           "parameters: project, pipeline, days (1-366)")
    except _UnknownJob as exc:
        return _error_page(f"Job {name}", 404, str(exc), exc.hint)
    except _NoDB:
        return _error_page(f"Job {name}", 503, *NO_DB)
    days = [d.day.isoformat()[5:] for d in trends.days]
    durations = line_chart(f"{name}: duration of successful builds", days, [
        Series("p50", [d.p50 for d in trends.days], "#1565c0"),
        Series("p95", [d.p95 for d in trends.days], "#ef6c00")], unit=" s")
    success = line_chart(f"{name}: success rate", days, [
        Series("success rate", [round(d.success_rate * 100, 1) for d in trends.days],
               "#2e7d32")], y_max=100, unit="%")
    total = sum(d.builds for d in trends.days)
    ok = sum(d.successes for d in trends.days)
    rate = f"{ok / total:.0%}" if total else "no builds"
    scope = " ".join(f"{k} {request.query[k]}" for k in ("project", "pipeline")
                     if request.query.get(k))
    rows = "".join(
        f"<tr><td>{d.day.isoformat()}</td><td>{d.builds}</td><td>{d.success_rate:.0%}</td>"
        f"<td>{_duration(d.p50)}</td><td>{_duration(d.p95)}</td></tr>" for d in trends.days)
    body = (f'<link rel="stylesheet" href="/static/history.css"><h1>Job {_e(name)}</h1>'
            f'<p>{_e(scope)} {len(trends.days)} days with builds, {total} builds, success rate '
            f'{rate}. <a href="/builds?{urlencode({"job": name})}">All its builds</a>.</p>'
            f'<div class="charts">{durations}{success}</div>'
            "<table><thead><tr><th>day (UTC)</th><th>builds</th><th>success</th><th>p50</th>"
            f"<th>p95</th></tr></thead><tbody>{rows}</tbody></table>")
    return page(f"Job {name}", body, active="Builds")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/builds", api_builds)
    app.router.add_get("/api/builds/{uuid}", api_build)
    app.router.add_get("/api/buildsets", api_buildsets)
    app.router.add_get("/api/buildsets/{uuid}", api_buildset)
    app.router.add_get("/api/jobs/{job}/trends", api_job_trends)
    app.router.add_get("/builds", builds_page)
    app.router.add_get("/buildsets", buildsets_page)
    app.router.add_get("/build/{uuid}", build_page)
    app.router.add_get("/buildset/{uuid}", buildset_page)
    app.router.add_get("/job/{job}", job_page)
