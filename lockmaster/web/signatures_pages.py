"""Known failures on the web (docs/web.md, "Signatures and failures"):

    /api/signatures, /signatures: each signature's hits, the gate resets it caused and the
        builds they restarted (its gate cost), its hit rate on successful builds ("too broad"
        above a threshold); signatures defined in the directory show even without hits, and
        files that do not load are named;
    /api/failures, /failures: failed builds no signature matched, and the classification rate
        per day.

The numbers come from signature_stats.py over the results database (builds ended in the
window: `since`, `until`, default the last 30 days).
"""

from __future__ import annotations

import asyncio
import html
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lockmaster.web import signature_stats as stats
from lockmaster.web.builds_pages import NO_DB, log_view
from lockmaster.web.charts import Series, line_chart
from lockmaster.web.context import CTX, WebContext
from lockmaster.web.errors import bad_request, unavailable
from lockmaster.web.layout import page

DEFAULT_DAYS = 30
SIGNATURES_HINT = ("parameters: since, until (ISO 8601 dates or times, UTC; default the last "
                   "30 days), too_broad (0-1, the share of hits on successful builds above "
                   "which a signature is flagged; default 0.05)")
FAILURES_HINT = ("parameters: since, until (ISO 8601, UTC; default the last 30 days), project, "
                 "job, pipeline, limit (1-500), offset")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime | None = None
    until: datetime | None = None

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None \
            else value

    def window(self) -> tuple[datetime, datetime | None]:
        try:
            since = self.since or (self.until or datetime.now(UTC)) - timedelta(
                days=DEFAULT_DAYS)
        except OverflowError:  # until within 30 days of year 1
            raise ValueError(f"until {self.until} is too early: give since as well") from None
        if self.until is not None and since >= self.until:
            raise ValueError(f"since ({since.isoformat()}) is not before until "
                             f"({self.until.isoformat()})")
        return since, self.until


class SignatureParams(_Params):
    too_broad: float = Field(default=stats.TOO_BROAD, ge=0, le=1)


class FailureParams(_Params):
    project: str | None = None
    job: str | None = None
    pipeline: str | None = None
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=100_000)


class BadParams(ValueError):
    pass


def _parse(model: type[Any], query: Any) -> Any:
    given = {k: v for k, v in query.items() if v != ""}
    if any("\x00" in k or "\x00" in v for k, v in given.items()):
        raise BadParams("bad parameters: a NUL character is not allowed")
    try:
        params = model.model_validate(given)
        params.window()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'parameters'}: {e['msg']}"
                             for e in exc.errors())
        raise BadParams(f"bad parameters: {problems}") from None
    except ValueError as exc:
        raise BadParams(f"bad parameters: {exc}") from None
    return params


def _defined(ctx: WebContext) -> tuple[list[tuple[str, str, str | None]], list[str]]:
    """The signatures in the configured directory (name, bug, description), and the errors of
    the files that do not load."""
    from lockmaster.config.signatures import signatures_directory
    from lockmaster.signatures.format import load_directory

    directory, _ = signatures_directory(ctx.config)
    if not directory.is_dir():
        return [], []
    found, errors = load_directory(directory)
    return [(s.name, s.bug, s.description) for s in found], [str(e) for e in errors]


async def _signatures(ctx: WebContext, params: SignatureParams) -> dict[str, Any]:
    defined, errors = await asyncio.to_thread(_defined, ctx)
    since, until = params.window()
    rows = await asyncio.to_thread(stats.signature_stats, ctx.results, since, until, defined,
                                   params.too_broad)
    return {"since": since.isoformat(), "until": until and until.isoformat(),
            "too_broad": params.too_broad,
            "signatures": [r.model_dump(mode="json") for r in rows],
            "errors": errors}


async def _failures(ctx: WebContext, params: FailureParams) -> dict[str, Any]:
    since, until = params.window()
    rows, next_offset = await asyncio.to_thread(
        lambda: stats.unclassified_failures(
            ctx.results, since, until, project=params.project, job=params.job,
            pipeline=params.pipeline, limit=params.limit, offset=params.offset))
    days = await asyncio.to_thread(stats.classification_rate, ctx.results, since, until)
    failed = sum(d.failed for d in days)
    classified = sum(d.classified for d in days)
    for row in rows:
        row["end_time"] = row["end_time"] and row["end_time"].isoformat()
        row["log_view"] = log_view(ctx, row["log_url"])
        row["url"] = f"/build/{quote(row['uuid'])}"
    return {"since": since.isoformat(), "until": until and until.isoformat(),
            "failures": rows, "next_offset": next_offset,
            "classification": [d.model_dump(mode="json") for d in days],
            "totals": {"failed": failed, "classified": classified,
                       "rate": classified / failed if failed else None}}


async def api_signatures(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    if ctx.results is None:
        return unavailable(*NO_DB)
    try:
        params = _parse(SignatureParams, request.query)
    except BadParams as exc:
        return bad_request(str(exc), SIGNATURES_HINT)
    return web.json_response(await _signatures(ctx, params))


async def api_failures(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    if ctx.results is None:
        return unavailable(*NO_DB)
    try:
        params = _parse(FailureParams, request.query)
    except BadParams as exc:
        return bad_request(str(exc), FAILURES_HINT)
    return web.json_response(await _failures(ctx, params))


# --- pages ------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return "" if value is None else html.escape(str(value))


def _problem(title: str, status: int, error: str, hint: str) -> web.Response:
    body = (f'<h1>{title}</h1><div class="error-banner" role="alert">{_e(error)}</div>'
            f'<p class="muted">{_e(hint)}</p>')
    return page(title, body, active="Signatures", status=status)


def _window_form(request: web.Request, extra: tuple[str, ...] = ()) -> str:
    fields = "".join(
        f'<label>{name} <input name="{name}" value="{_e(request.query.get(name, ""))}"'
        f'{" type=date" if name in ("since", "until") else ""}></label>'
        for name in ("since", "until", *extra))
    return f'<form class="toolbar filters" method="get">{fields}<button>show</button></form>'


async def signatures_page(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    if ctx.results is None:
        return _problem("Signatures", 503, *NO_DB)
    try:
        params = _parse(SignatureParams, request.query)
    except BadParams as exc:
        return _problem("Signatures", 400, str(exc), SIGNATURES_HINT)
    data = await _signatures(ctx, params)
    rows = []
    for s in data["signatures"]:
        broad = ('<span class="too-broad" title="matches successful builds">too broad</span>'
                 if s["too_broad"] else "")
        name = _e(s["signature"]) + ("" if s["defined"] else
                                     ' <span class="muted">(file removed)</span>')
        rows.append(
            f'<tr><td>{name}</td><td><a href="{_e(s["bug"])}">{_e(s["bug"])}</a></td>'
            f'<td class="num">{s["hits"]}</td><td class="num">{s["failure_hits"]}</td>'
            f'<td class="num">{s["success_hits"]} ({s["success_hit_rate"]:.0%}) {broad}</td>'
            f'<td class="num">{s["resets"]}</td><td class="num">{s["builds_restarted"]}</td>'
            f'<td>{_e((s["last_hit"] or "")[:19].replace("T", " "))}</td></tr>')
    errors = "".join(f'<div class="error-banner">{_e(e)}</div>' for e in data["errors"])
    body = (f'<link rel="stylesheet" href="/static/history.css"><h1>Known-failure signatures</h1>'
            f'{_window_form(request, ("too_broad",))}{errors}'
            f'<p class="muted">Builds ended from {_e(data["since"][:10])}'
            f'{" to " + _e(data["until"][:10]) if data["until"] else ""}. Gate cost: the builds '
            f'restarted behind the gate items it failed (resets &times; builds per reset). '
            f'Too broad: over {params.too_broad:.0%} of its hits on successful builds. '
            f'<a href="/failures">Unclassified failures</a>.</p>'
            '<table><thead><tr><th>signature</th><th>bug</th><th class="num">hits</th>'
            '<th class="num">on failures</th><th class="num">on successes</th>'
            '<th class="num">gate resets</th><th class="num">builds restarted</th>'
            f'<th>last hit</th></tr></thead><tbody>{"".join(rows) or _empty(8)}</tbody></table>')
    return page("Signatures", body, active="Signatures")


def _empty(columns: int) -> str:
    return f'<tr><td colspan="{columns}" class="muted">none in this window</td></tr>'


async def failures_page(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    if ctx.results is None:
        return _problem("Unclassified failures", 503, *NO_DB)
    try:
        params = _parse(FailureParams, request.query)
    except BadParams as exc:
        return _problem("Unclassified failures", 400, str(exc), FAILURES_HINT)
    data = await _failures(ctx, params)
    days = data["classification"]
    chart = line_chart("classification rate per day", [d["day"][5:] for d in days], [
        Series("classified", [round(d["rate"] * 100, 1) for d in days], "#1565c0")],
        y_max=100, unit="%")
    rows = "".join(
        f'<tr><td><a href="{_e(f["url"])}">{_e(f["uuid"][:12])}</a></td>'
        f'<td><a href="/job/{quote(f["job"])}">{_e(f["job"])}</a></td><td>{_e(f["project"])}'
        f'</td><td>{f["change"]},{f["patchset"]}</td><td>{_e(f["pipeline"])}</td>'
        f'<td class="{_e(f["result"])}">{_e(f["result"])}</td>'
        f'<td>{_e((f["end_time"] or "")[:19].replace("T", " "))}</td>'
        f'<td>{_log_link(f)}</td></tr>' for f in data["failures"])
    totals = data["totals"]
    rate = f"{totals['rate']:.0%}" if totals["rate"] is not None else "no failures"
    more = ""
    if data["next_offset"] is not None:
        query = {**request.query, "offset": str(data["next_offset"])}
        more = f'<p><a href="/failures?{_e(urlencode(query))}">older</a></p>'
    body = (f'<link rel="stylesheet" href="/static/history.css"><h1>Unclassified failures</h1>'
            f'{_window_form(request, ("project", "job", "pipeline"))}'
            f'<p>{totals["failed"]} failed builds, {totals["classified"]} matched a known '
            f'failure: {rate} classified. <a href="/signatures">Signatures</a>.</p>'
            f'<div class="charts">{chart}</div>'
            '<table><thead><tr><th>build</th><th>job</th><th>project</th><th>change</th>'
            '<th>pipeline</th><th>result</th><th>ended</th><th>log</th></tr></thead>'
            f'<tbody>{rows or _empty(8)}</tbody></table>{more}')
    return page("Unclassified failures", body, active="Signatures")


def _log_link(row: dict[str, Any]) -> str:
    target = row["log_view"] or row["log_url"]
    return f'<a href="{_e(target)}">log</a>' if target else ""


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/signatures", api_signatures)
    app.router.add_get("/api/failures", api_failures)
    app.router.add_get("/signatures", signatures_page)
    app.router.add_get("/failures", failures_page)
