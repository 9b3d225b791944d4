"""Known-failure statistics from the results database, for /signatures and /failures.

Per signature, over a time window (builds that ended in it):
- hits: builds its regex matched; `failure_hits` on failed builds, `success_hits` on
  successful ones (signatures are tried on successes too: signatures/format.py);
- success_hit_rate = success_hits / hits: a signature that matches successful builds matches
  normal output, so it is flagged "too broad" above a threshold;
- gate cost: the gate resets it caused (gate buildsets that failed with a build it matched and
  restarted builds behind them) and the builds restarted behind those items; the cost is
  resets x builds restarted per reset = the builds restarted, summed. A reset whose failed
  builds matched two signatures counts for both.

Unclassified failures: failed builds (the results a signature classifies by default,
signatures/format.FAILED_RESULTS) that no signature matched; the classification rate of a day
is the share of that day's failed builds that a signature matched.

Synchronous (callers use asyncio.to_thread), reading through ResultsDB.reading().
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, case, exists, func, select

from lockmaster.results.schema import Build, BuildKnownFailure, Buildset
from lockmaster.signatures.format import FAILED_RESULTS

FAILED = tuple(r.value for r in FAILED_RESULTS)
TOO_BROAD = 0.05  # default: more than 5% of a signature's hits on successful builds


class SignatureStat(BaseModel):
    signature: str
    bug: str | None
    description: str | None = None
    defined: bool  # its file is in the signatures directory now
    hits: int = 0
    failure_hits: int = 0
    success_hits: int = 0
    success_hit_rate: float = 0.0
    too_broad: bool = False
    resets: int = 0  # gate items that failed with a build it matched and reset others
    builds_restarted: int = 0  # builds restarted behind those items: the gate cost
    last_hit: datetime | None = None


class DayRate(BaseModel):
    day: date
    failed: int
    classified: int
    rate: float  # classified / failed


def _window(column: Any, since: datetime | None, until: datetime | None
            ) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return conditions


def signature_stats(db: Any, since: datetime | None, until: datetime | None,
                    defined: Iterable[tuple[str, str, str | None]] = (),
                    too_broad: float = TOO_BROAD) -> list[SignatureStat]:
    """Every signature with hits in the window, and every `defined` one (name, bug,
    description) even without any; most costly first, then most hits."""
    kf = BuildKnownFailure
    is_success = kf.result == "SUCCESS"
    hits_query = (
        select(kf.signature, func.count(), func.sum(case((is_success, 1), else_=0)),
               func.max(kf.end_time), func.max(kf.bug))
        .where(*_window(kf.end_time, since, until)).group_by(kf.signature))
    # The resets: one row per (signature, gate buildset) first, so that a buildset with two
    # matched builds is counted once.
    per_item = (
        select(kf.signature.label("signature"), Buildset.uuid.label("item"),
               Buildset.restarted_behind.label("restarted"))
        .join(Build, Build.uuid == kf.build_uuid)
        .join(Buildset, Buildset.uuid == Build.buildset_uuid)
        .where(~is_success, Buildset.restarted_behind > 0, Buildset.result != "SUCCESS",
               *_window(kf.end_time, since, until))
        .distinct().subquery())
    cost_query = select(per_item.c.signature, func.count(per_item.c.item),
                        func.sum(per_item.c.restarted)).group_by(per_item.c.signature)
    stats: dict[str, SignatureStat] = {
        name: SignatureStat(signature=name, bug=bug, description=description, defined=True)
        for name, bug, description in defined}
    with db.reading() as conn:
        for name, hits, successes, last, bug in conn.execute(hits_query):
            stat = stats.setdefault(name, SignatureStat(signature=name, bug=bug,
                                                        defined=False))
            stat.hits = int(hits)
            stat.success_hits = int(successes or 0)
            stat.failure_hits = stat.hits - stat.success_hits
            stat.success_hit_rate = stat.success_hits / stat.hits if stat.hits else 0.0
            stat.too_broad = stat.success_hit_rate > too_broad
            stat.last_hit = last
            stat.bug = stat.bug or bug
        for name, resets, restarted in conn.execute(cost_query):
            if name in stats:
                stats[name].resets = int(resets)
                stats[name].builds_restarted = int(restarted or 0)
    return sorted(stats.values(), key=lambda s: (-s.builds_restarted, -s.hits, s.signature))


def unclassified_failures(db: Any, since: datetime | None, until: datetime | None, *,
                          project: str | None = None, job: str | None = None,
                          pipeline: str | None = None, limit: int = 50, offset: int = 0
                          ) -> tuple[list[dict[str, Any]], int | None]:
    """Failed builds no signature matched, newest first; and the next page's offset."""
    query = (select(Build.uuid, Build.job, Build.project, Build.change, Build.patchset,
                    Build.pipeline, Build.result, Build.end_time, Build.log_url,
                    Build.message)
             .where(Build.result.in_(FAILED),
                    ~exists().where(BuildKnownFailure.build_uuid == Build.uuid),
                    *_window(Build.end_time, since, until)))
    for column, value in ((Build.project, project), (Build.job, job),
                          (Build.pipeline, pipeline)):
        if value is not None:
            query = query.where(column == value)
    query = query.order_by(Build.end_time.desc(), Build.seq.desc()).limit(limit + 1)
    with db.reading() as conn:
        rows = [dict(row) for row in conn.execute(query.offset(offset)).mappings()]
    more = len(rows) > limit
    return rows[:limit], offset + limit if more else None


def _day(column: Any, dialect: str) -> Any:
    if dialect == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)  # SQLite keeps UTC text: its date part


def classification_rate(db: Any, since: datetime | None, until: datetime | None
                        ) -> list[DayRate]:
    """Per day (UTC) with failed builds: how many, and how many a signature matched."""
    classified = exists().where(BuildKnownFailure.build_uuid == Build.uuid)
    day = _day(Build.end_time, db.dialect).label("day")
    query = (select(day, func.count(), func.sum(case((classified, 1), else_=0)))
             .where(Build.result.in_(FAILED), Build.end_time.is_not(None),
                    *_window(Build.end_time, since, until))
             .group_by(day).order_by(day))
    found = []
    with db.reading() as conn:
        for value, failed, matched in conn.execute(query):
            when = value if isinstance(value, date) else date.fromisoformat(str(value))
            found.append(DayRate(day=when, failed=int(failed), classified=int(matched or 0),
                                 rate=int(matched or 0) / int(failed)))
    return found

