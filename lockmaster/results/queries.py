"""Reading the results database: build and buildset pages, one build, job trends, estimates
and the gate's reset rate. Synchronous (async callers use asyncio.to_thread); filters and pages
are pydantic models; a bad filter raises BadFilter (the web answers HTTP 400 with its text).

Two ways to page:
- newest first (the history pages): `limit` rows, then `offset` for the next page;
- `completed_since=<seq>`: the rows written after that sequence number, oldest first; the
  page's `next_completed_since` is the value to ask with next. Rows are never re-read or
  skipped (db.py: rows become visible in seq order).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Select, and_, case, func, select

from lockmaster.model.build import KnownFailure, Result
from lockmaster.results.db import ResultsDB
from lockmaster.results.schema import Build, BuildKnownFailure, Buildset

MAX_LIMIT = 1000
MAX_OFFSET = 100_000
RESULTS = {r.value for r in Result} | {"CANCELED"}
# Check runs (CheckOutcome.result, CANCELLED, RESTARTED) and gate items
# (workflows/gate_recording.FINAL_REPORTS).
BUILDSET_RESULTS = {"SUCCESS", "FAILURE", "MERGE_CONFLICT", "MERGE_FAILURE", "CONFIG_ERROR",
                    "NO_JOBS", "NOT_ENQUEUED", "CANCELLED", "RESTARTED", "DEQUEUED", "ERROR"}


class BadFilter(ValueError):
    """A filter value the database cannot be asked with (what, and what is allowed)."""


class _Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str | None = None
    change: int | None = Field(default=None, ge=1)
    patchset: int | None = Field(default=None, ge=1)
    pipeline: str | None = None
    queue: str | None = None
    result: str | None = None
    since: datetime | None = None  # ended at or after
    until: datetime | None = None  # ended before
    completed_since: int | None = Field(default=None, ge=0)  # seq: rows written after it
    limit: int = Field(default=50, ge=1, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # a time without a zone is UTC
        return value

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Any:
        """From query parameters (strings); empty values are ignored. BadFilter on bad ones."""
        given = {k.replace("-", "_"): v for k, v in params.items() if v not in (None, "")}
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'filter'}: {e['msg']}" for e in exc.errors())
            raise BadFilter(f"bad filter: {problems}") from None

    def check(self, results: set[str]) -> None:
        if self.since and self.until and self.since >= self.until:
            raise BadFilter(f"bad filter: since ({self.since.isoformat()}) is not before until "
                            f"({self.until.isoformat()})")
        if self.result is not None and self.result not in results:
            raise BadFilter(f"bad filter: result {self.result!r} is not one of "
                            f"{', '.join(sorted(results))}")
        if self.patchset is not None and self.change is None:
            raise BadFilter("bad filter: patchset needs change")
        if self.completed_since is not None and self.offset:
            raise BadFilter("bad filter: completed_since pages by itself; drop offset")


class BuildFilter(_Filter):
    job: str | None = None
    voting: bool | None = None
    buildset_uuid: str | None = None
    final: bool | None = None  # False: only the RETRY attempts


class BuildsetFilter(_Filter):
    pass


class BuildRow(BaseModel):
    seq: int
    uuid: str
    buildset_uuid: str
    buildset_try: int
    pipeline: str
    queue: str | None
    connection: str
    project: str
    branch: str
    change: int
    patchset: int
    ref: str
    commit: str | None
    job: str
    result: str
    attempt: int
    voting: bool
    final: bool
    start_time: datetime | None
    end_time: datetime | None
    duration: float | None
    node_provider: str | None
    node_label: str | None
    node_name: str | None
    log_url: str | None
    message: str | None
    changes: list[dict[str, Any]]
    changes_key: str
    known_failures: list[KnownFailure] = Field(default_factory=list)


class BuildsetRow(BaseModel):
    seq: int
    uuid: str
    pipeline: str
    queue: str | None
    connection: str
    project: str
    branch: str
    change: int
    patchset: int
    ref: str
    commit: str | None
    change_url: str | None
    result: str
    message: str | None
    reason: str | None
    start_time: datetime | None
    end_time: datetime | None
    changes: list[dict[str, Any]]
    changes_key: str
    restarted_behind: int


class BuildPage(BaseModel):
    builds: list[BuildRow]
    # Newest first: the offset of the next page (None: this was the last). completed_since:
    # the seq to ask with next (the last row's, or the one asked with when nothing came).
    next_offset: int | None = None
    next_completed_since: int | None = None


class BuildsetPage(BaseModel):
    buildsets: list[BuildsetRow]
    next_offset: int | None = None
    next_completed_since: int | None = None


def _common(query: Select[Any], table: Any, f: _Filter) -> Select[Any]:
    for name in ("project", "change", "patchset", "pipeline", "queue", "result"):
        value = getattr(f, name)
        if value is not None:
            query = query.where(getattr(table, name) == value)
    if f.since is not None:
        query = query.where(table.end_time >= f.since)
    if f.until is not None:
        query = query.where(table.end_time < f.until)
    if f.completed_since is not None:
        return query.where(table.seq > f.completed_since).order_by(table.seq.asc())
    # Newest first; builds not ended (none are recorded so) would sort last.
    return query.order_by(table.end_time.desc(), table.seq.desc())


def _page(rows: list[Any], f: _Filter) -> tuple[list[Any], int | None, int | None]:
    more = len(rows) > f.limit
    rows = rows[:f.limit]
    if f.completed_since is not None:
        return rows, None, rows[-1].seq if rows else f.completed_since
    return rows, f.offset + f.limit if more else None, None


def list_builds(db: ResultsDB, f: BuildFilter) -> BuildPage:
    f.check(RESULTS)
    query = _common(select(Build), Build, f)
    for name in ("job", "voting", "buildset_uuid", "final"):
        value = getattr(f, name)
        if value is not None:
            query = query.where(getattr(Build, name) == value)
    query = query.limit(f.limit + 1).offset(f.offset)
    with db.reading() as conn:
        rows = list(conn.execute(query).mappings())
        rows, next_offset, next_seq = _page(rows, f)
        failures = _known_failures(conn, [r["uuid"] for r in rows])
    builds = [BuildRow(**_row(r, BuildRow.model_fields.keys() - {"known_failures"}),
                       known_failures=failures.get(r["uuid"], [])) for r in rows]
    return BuildPage(builds=builds, next_offset=next_offset, next_completed_since=next_seq)


def _row(mapping: Any, fields: Any) -> dict[str, Any]:
    return {k: mapping[k] for k in fields}


def list_buildsets(db: ResultsDB, f: BuildsetFilter) -> BuildsetPage:
    f.check(BUILDSET_RESULTS)
    query = _common(select(Buildset), Buildset, f).limit(f.limit + 1).offset(f.offset)
    with db.reading() as conn:
        rows = list(conn.execute(query).mappings())
    rows, next_offset, next_seq = _page(rows, f)
    return BuildsetPage(
        buildsets=[BuildsetRow(**_row(r, BuildsetRow.model_fields)) for r in rows],
        next_offset=next_offset, next_completed_since=next_seq)


def get_build(db: ResultsDB, uuid: str) -> BuildRow | None:
    with db.reading() as conn:
        row = conn.execute(select(Build).where(Build.uuid == uuid)).mappings().first()
        if row is None:
            return None
        failures = _known_failures(conn, [uuid])
    return BuildRow(**_row(row, BuildRow.model_fields.keys() - {"known_failures"}),
                    known_failures=failures.get(uuid, []))


def get_buildset(db: ResultsDB, uuid: str) -> tuple[BuildsetRow, list[BuildRow]] | None:
    """A buildset and its builds (every attempt and every reset's, oldest first)."""
    with db.reading() as conn:
        row = conn.execute(select(Buildset).where(Buildset.uuid == uuid)).mappings().first()
    if row is None:
        return None
    page = list_builds(db, BuildFilter(buildset_uuid=uuid, limit=MAX_LIMIT))
    builds = sorted(page.builds, key=lambda b: b.seq)
    return BuildsetRow(**_row(row, BuildsetRow.model_fields)), builds


def _known_failures(conn: Any, uuids: list[str]) -> dict[str, list[KnownFailure]]:
    if not uuids:
        return {}
    found: dict[str, list[KnownFailure]] = {}
    query = select(BuildKnownFailure.build_uuid, BuildKnownFailure.signature,
                   BuildKnownFailure.bug).where(BuildKnownFailure.build_uuid.in_(uuids))
    for build_uuid, signature, bug in conn.execute(query.order_by(BuildKnownFailure.id)):
        found.setdefault(build_uuid, []).append(KnownFailure(signature=signature, bug=bug))
    return found


# --- trends and estimates ---------------------------------------------------------------------


class DayTrend(BaseModel):
    day: date
    builds: int  # final builds that ended that day (UTC)
    successes: int
    success_rate: float
    # Durations of that day's successful builds (seconds); None when none succeeded.
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None


class JobTrends(BaseModel):
    job: str
    project: str | None
    pipeline: str | None
    days: list[DayTrend]


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted `values` (non-empty)."""
    index = max(0, min(len(values) - 1, round(q / 100 * len(values) + 0.5) - 1))
    return values[index]


def job_trends(db: ResultsDB, job: str, project: str | None = None,
               pipeline: str | None = None, days: int = 30,
               now: datetime | None = None) -> JobTrends:
    if not 1 <= days <= 366:
        raise BadFilter(f"bad filter: days must be 1..366, not {days}")
    now = now or datetime.now(UTC)
    start = datetime.combine(now.date() - timedelta(days=days - 1), datetime.min.time(), UTC)
    query = select(Build.end_time, Build.duration, Build.result).where(
        Build.job == job, Build.final.is_(True), Build.end_time >= start)
    if project is not None:
        query = query.where(Build.project == project)
    if pipeline is not None:
        query = query.where(Build.pipeline == pipeline)
    per_day: dict[date, tuple[list[float], list[str]]] = {}
    with db.reading() as conn:
        for end_time, duration, result in conn.execute(query):
            durations, results = per_day.setdefault(end_time.date(), ([], []))
            results.append(result)
            if result == "SUCCESS" and duration is not None:
                durations.append(duration)
    trend = []
    for day in sorted(per_day):
        durations, results = per_day[day]
        durations.sort()
        ok = results.count("SUCCESS")
        trend.append(DayTrend(
            day=day, builds=len(results), successes=ok, success_rate=ok / len(results),
            p50=_percentile(durations, 50) if durations else None,
            p90=_percentile(durations, 90) if durations else None,
            p95=_percentile(durations, 95) if durations else None))
    return JobTrends(job=job, project=project, pipeline=pipeline, days=trend)


def recent_job_durations(db: ResultsDB, project: str, pipeline: str, jobs: list[str],
                         last: int = 10) -> dict[str, float]:
    """Estimates: the median duration of each job's last `last` successful builds in this
    project's pipeline (jobs without any are left out)."""
    found: dict[str, float] = {}
    with db.reading() as conn:
        for job in dict.fromkeys(jobs):
            query = (select(Build.duration)
                     .where(Build.job == job, Build.project == project,
                            Build.pipeline == pipeline, Build.result == "SUCCESS",
                            Build.duration.is_not(None))
                     .order_by(Build.end_time.desc()).limit(last))
            durations = [d for d in conn.scalars(query) if d is not None]
            if durations:
                found[job] = float(statistics.median(durations))
    return found


class ResetRate(BaseModel):
    pipeline: str
    queue: str | None
    items: int  # gate items reported in the window
    failed: int  # of them, those that failed (FAILURE or MERGE_CONFLICT)
    # Builds of other items restarted because of those failures (0 when not counted: see
    # docs/results.md).
    restarted_builds: int
    rate: float  # failed / items (0 when no items)


def reset_rate(db: ResultsDB, pipeline: str, queue: str | None = None,
               window: timedelta = timedelta(days=1), now: datetime | None = None) -> ResetRate:
    """The fraction of gate items in `window` that failed and so reset the items behind them
    (Zuul's dependent pipeline: every item behind a failing one is tested again)."""
    if window <= timedelta(0):
        raise BadFilter("bad filter: window must be positive")
    now = now or datetime.now(UTC)
    conditions = [Buildset.pipeline == pipeline, Buildset.end_time >= now - window,
                  Buildset.result.not_in(("NOT_ENQUEUED",))]
    if queue is not None:
        conditions.append(Buildset.queue == queue)
    failed = Buildset.result.in_(("FAILURE", "MERGE_CONFLICT"))
    query = select(func.count(), func.sum(case((failed, 1), else_=0)),
                   func.sum(Buildset.restarted_behind)).where(and_(*conditions))
    with db.reading() as conn:
        items, failures, restarted = conn.execute(query).one()
    items, failures, restarted = int(items or 0), int(failures or 0), int(restarted or 0)
    return ResetRate(pipeline=pipeline, queue=queue, items=items, failed=failures,
                     restarted_builds=restarted, rate=failures / items if items else 0.0)
