"""The results database: opening it (migrated to the newest schema), and writing builds and
buildsets once each.

Synchronous SQLAlchemy 2 (one engine per process, a small connection pool); async callers use
asyncio.to_thread. SQLite runs in WAL mode, so the web server reads while the orchestrator
writes; PostgreSQL through psycopg 3.

Writes are insert-or-ignore by uuid (a retried activity writes nothing twice) and take the
table's write lock before choosing `seq`, so rows become visible in `seq` order: SQLite's
BEGIN IMMEDIATE, PostgreSQL's transaction-scoped advisory lock. A reader paging with
completed_since= therefore never sees seq N+1 before N has committed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from lockmaster.config.results import redact
from lockmaster.model.results import BuildRecord, BuildsetRecord, RecordResult
from lockmaster.results.schema import Build, BuildKnownFailure, Buildset

log = logging.getLogger(__name__)

# The PostgreSQL advisory lock every write takes (SQLite: BEGIN IMMEDIATE). One for both
# tables: a build and the failed gate item it was tested behind may be written at the same
# moment, and each write counts what the other wrote (restarted_behind).
_LOCK_KEY = 0x6C6D_6201
_WRITE = "lockmaster_write"  # execution option: this transaction writes (SQLite: IMMEDIATE)


class ResultsDBError(RuntimeError):
    """The results database cannot be opened or used (what, where, how to fix)."""


def _epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _make_engine(url: URL, pool_size: int) -> Engine:
    if url.get_backend_name() == "sqlite":
        memory = url.database in (None, "", ":memory:")
        if not memory:
            Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, poolclass=StaticPool if memory else None,
                               connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # Transactions are begun by SQLAlchemy (below), not by the sqlite3 module, so that a
            # writer can take the write lock at BEGIN.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            writes = conn.get_execution_options().get(_WRITE, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

        return engine
    # A server that does not answer fails an attempt in 10 s (the recording activity retries)
    # rather than holding a worker thread for the TCP timeout.
    return create_engine(url, pool_size=pool_size, pool_pre_ping=True,
                         connect_args={"connect_timeout": 10})


class ResultsDB:
    """An open results database. `ResultsDB.open(url)` migrates it to the newest schema."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str | URL, *, migrate: bool = True, pool_size: int = 5) -> ResultsDB:
        try:
            parsed = make_url(url) if isinstance(url, str) else url
        except Exception as exc:
            raise ResultsDBError(f"results url {redact(str(url))!r} is not a database URL: "
                                 f"{exc}") from exc
        db = cls(_make_engine(parsed, pool_size))
        if migrate:
            from lockmaster.results.migrate import upgrade  # (imports Alembic: only here)

            try:
                upgrade(db.engine)
            except Exception as exc:
                db.close()
                raise ResultsDBError(
                    f"cannot open the results database "
                    f"{parsed.render_as_string(hide_password=True)}: {exc}") from exc
        return db

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(**{_WRITE: True}) as conn, conn.begin():
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            yield conn

    # --- writing ---------------------------------------------------------------------------------

    def record_builds(self, records: Iterable[BuildRecord]) -> RecordResult:
        wanted: dict[str, BuildRecord] = {}
        for record in records:
            wanted.setdefault(record.uuid, record)
        if not wanted:
            return RecordResult()
        with self._writing() as conn:
            there = set(conn.scalars(select(Build.uuid).where(Build.uuid.in_(list(wanted)))))
            new = [r for r in wanted.values() if r.uuid not in there]
            if new:
                seq = conn.scalar(select(func.coalesce(func.max(Build.seq), 0))) or 0
                now = datetime.now(UTC)
                conn.execute(insert(Build), [_build_row(r, seq + i + 1, now)
                                             for i, r in enumerate(new)])
                matches = [_known_failure_row(r, kf) for r in new
                           for kf in {k.signature: k for k in r.known_failures}.values()]
                if matches:
                    conn.execute(insert(BuildKnownFailure), matches)
                for r in new:
                    _count_behind(conn, r, _changes_key(r))
        return RecordResult(recorded=len(new), already=len(there))

    def record_buildset(self, record: BuildsetRecord) -> RecordResult:
        with self._writing() as conn:
            if conn.scalar(select(Buildset.id).where(Buildset.uuid == record.uuid)) is not None:
                return RecordResult(already=1)
            seq = conn.scalar(select(func.coalesce(func.max(Buildset.seq), 0))) or 0
            row = _buildset_row(record, seq + 1, datetime.now(UTC))
            if row["start_time"] is None:
                # A gate item reported after it left the queue: it started with its first build.
                row["start_time"] = conn.scalar(select(func.min(Build.start_time)).where(
                    Build.buildset_uuid == record.uuid))
            if record.queue is not None and record.result != "SUCCESS":
                row["restarted_behind"] += _restarted_behind(conn, record, row["start_time"])
            conn.execute(insert(Buildset), [row])
        return RecordResult(recorded=1)


# --- the gate's cost of a failed item: builds restarted behind it ------------------------------
#
# Every build of another item of the same gate queue that had a failed (or dequeued) item's
# change ahead of it in its speculative state was thrown away: the items behind are tested again
# without it (Zuul's reset). Counted from both sides, whichever is written first: a build
# written after the failed item's buildset adds one to it; the buildset written after counts
# the builds already there. Both under the one write lock, so none is counted twice or missed.


def _ahead(changes_key: str) -> list[tuple[int, int]]:
    """(number, patchset) of the changes ahead of the build's own (the last): from the key,
    which the gate records as the build was asked for."""
    ahead = []
    for token in changes_key.split()[:-1]:
        number, _, patchset = token.partition(",")
        if number.isdigit() and patchset.isdigit():
            ahead.append((int(number), int(patchset)))
    return ahead


def _count_behind(conn: Connection, r: BuildRecord, changes_key: str) -> None:
    ahead_of_it = _ahead(changes_key)
    if r.queue is None or not ahead_of_it:
        return
    ahead = or_(*(and_(Buildset.change == number, Buildset.patchset == patchset)
                  for number, patchset in ahead_of_it))
    conditions = [Buildset.pipeline == r.pipeline, Buildset.queue == r.queue,
                  Buildset.result != "SUCCESS", Buildset.uuid != r.buildset_uuid, ahead]
    if r.started is not None:  # the item was still in the queue when the build started
        conditions.append(or_(Buildset.end_time.is_(None),
                              Buildset.end_time >= _epoch(r.started)))
    if r.ended is not None:
        conditions.append(or_(Buildset.start_time.is_(None),
                              Buildset.start_time <= _epoch(r.ended)))
    conn.execute(update(Buildset).where(*conditions)
                 .values(restarted_behind=Buildset.restarted_behind + 1))


def _restarted_behind(conn: Connection, record: BuildsetRecord,
                      started: datetime | None) -> int:
    change = record.change
    mine = (change.number, change.patchset)
    query = select(Build.changes_key).where(
        Build.pipeline == record.pipeline, Build.queue == record.queue,
        Build.buildset_uuid != record.uuid,
        Build.changes_key.like(f"%{change.number},{change.patchset}%"))
    if started is not None:
        query = query.where(or_(Build.end_time.is_(None), Build.end_time >= started))
    if record.ended is not None:
        query = query.where(or_(Build.start_time.is_(None),
                                Build.start_time <= _epoch(record.ended)))
    return sum(1 for key in conn.scalars(query) if mine in _ahead(key))


def _change_columns(change: Any) -> dict[str, Any]:
    return {"connection": change.connection, "project": change.project,
            "branch": change.branch, "change": change.number, "patchset": change.patchset,
            "ref": change.ref, "commit": change.commit}


def _build_row(r: BuildRecord, seq: int, now: datetime) -> dict[str, Any]:
    duration = r.ended - r.started if r.started is not None and r.ended is not None else None
    return {
        **_change_columns(r.change), "seq": seq, "uuid": r.uuid,
        "buildset_uuid": r.buildset_uuid, "buildset_try": r.buildset_try,
        "pipeline": r.pipeline, "queue": r.queue, "job": r.job, "result": r.result,
        "attempt": r.attempt, "voting": r.voting, "final": r.result != "RETRY",
        "start_time": _epoch(r.started), "end_time": _epoch(r.ended), "duration": duration,
        "node_provider": r.node_provider, "node_label": r.node_label,
        "node_name": r.node_name, "log_url": r.log_url, "message": r.message,
        "changes": [c.model_dump() for c in r.changes], "changes_key": _changes_key(r),
        "recorded_at": now,
    }


def _changes_key(r: BuildRecord) -> str:
    if r.changes_key is not None:
        return r.changes_key
    return " ".join(f"{c.number},{c.patchset}" for c in r.changes)


def _known_failure_row(r: BuildRecord, kf: Any) -> dict[str, Any]:
    return {"build_uuid": r.uuid, "signature": kf.signature, "bug": kf.bug,
            "result": r.result, "job": r.job, "project": r.change.project,
            "end_time": _epoch(r.ended)}


def _buildset_row(r: BuildsetRecord, seq: int, now: datetime) -> dict[str, Any]:
    return {
        **_change_columns(r.change), "seq": seq, "uuid": r.uuid, "pipeline": r.pipeline,
        "queue": r.queue, "change_url": r.change.url, "result": r.result,
        "message": r.message, "reason": r.reason, "start_time": _epoch(r.started),
        "end_time": _epoch(r.ended), "changes": [c.model_dump() for c in r.changes],
        "changes_key": " ".join(f"{c.number},{c.patchset}" for c in r.changes),
        "restarted_behind": r.restarted_behind, "recorded_at": now,
    }
