"""The results database's tables (SQLAlchemy 2 declarative models). The Alembic migrations in
migrations/versions create exactly these; a change here needs a new migration
(`lockmaster results check` says when the database and these differ).

Times are stored as timezone-aware UTC timestamps (SQLite keeps them as text; UTCDateTime puts
the zone back when reading). `seq` is the completion sequence: assigned when the row is
written (rows are written once, when the build or buildset is finished), strictly increasing,
never reused: a consumer that remembers the last `seq` it read pages on with completed_since=
and neither reads a row twice nor misses one (db.py takes a lock so that rows become visible in
`seq` order).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the results database; use UTC")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store naive UTC so text comparisons order correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Buildset(Base):
    __tablename__ = "buildsets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, unique=True)
    uuid: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    pipeline: Mapped[str] = mapped_column(String(255), nullable=False)
    queue: Mapped[str | None] = mapped_column(String(255))
    connection: Mapped[str] = mapped_column(String(255), nullable=False)
    project: Mapped[str] = mapped_column(String(255), nullable=False)
    branch: Mapped[str] = mapped_column(String(255), nullable=False)
    change: Mapped[int] = mapped_column(Integer, nullable=False)
    patchset: Mapped[int] = mapped_column(Integer, nullable=False)
    ref: Mapped[str] = mapped_column(String(255), nullable=False)
    commit: Mapped[str | None] = mapped_column(String(64))
    change_url: Mapped[str | None] = mapped_column(String(1024))
    result: Mapped[str] = mapped_column(String(64), nullable=False)
    message: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Speculative state: the changes tested together, this one last ([{connection, project,
    # number, patchset}]), and the same as Zuul's "N,P N,P".
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    changes_key: Mapped[str] = mapped_column(Text, nullable=False, default="")
    restarted_behind: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        Index("ix_buildsets_project_change", "project", "change", "patchset"),
        Index("ix_buildsets_pipeline_end", "pipeline", "end_time"),
        Index("ix_buildsets_end_time", "end_time"),
        Index("ix_buildsets_queue_end", "pipeline", "queue", "end_time"),
    )


class Build(Base):
    __tablename__ = "builds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, unique=True)
    uuid: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    # Not a foreign key: builds are recorded as they finish, their buildset when it reports.
    buildset_uuid: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    buildset_try: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    pipeline: Mapped[str] = mapped_column(String(255), nullable=False)
    queue: Mapped[str | None] = mapped_column(String(255))
    connection: Mapped[str] = mapped_column(String(255), nullable=False)
    project: Mapped[str] = mapped_column(String(255), nullable=False)
    branch: Mapped[str] = mapped_column(String(255), nullable=False)
    change: Mapped[int] = mapped_column(Integer, nullable=False)
    patchset: Mapped[int] = mapped_column(Integer, nullable=False)
    ref: Mapped[str] = mapped_column(String(255), nullable=False)
    commit: Mapped[str | None] = mapped_column(String(64))
    job: Mapped[str] = mapped_column(String(255), nullable=False)
    result: Mapped[str] = mapped_column(String(64), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    voting: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # A RETRY is followed by another attempt; every other result is the job's last word.
    final: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration: Mapped[float | None] = mapped_column(Float)  # seconds
    node_provider: Mapped[str | None] = mapped_column(String(255))
    node_label: Mapped[str | None] = mapped_column(String(255))
    node_name: Mapped[str | None] = mapped_column(String(255))
    log_url: Mapped[str | None] = mapped_column(String(2048))
    message: Mapped[str | None] = mapped_column(Text)
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    changes_key: Mapped[str] = mapped_column(Text, nullable=False, default="")
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        # The history pages: newest first, filtered by any of these (web benchmark: a filtered
        # page over 100,000 builds).
        Index("ix_builds_end_time", "end_time"),
        Index("ix_builds_project_end", "project", "end_time"),
        Index("ix_builds_job_end", "job", "end_time"),
        Index("ix_builds_pipeline_end", "pipeline", "end_time"),
        Index("ix_builds_result_end", "result", "end_time"),
        Index("ix_builds_change", "change", "patchset"),
        # Estimates and trends: the last successful builds of a job in a project's pipeline.
        Index("ix_builds_estimate", "job", "project", "pipeline", "result", "end_time"),
    )


class BuildKnownFailure(Base):
    """A known-failure signature that matched a build's logs: one row per match, with the
    build's result copied, so counting hits on failures and on successes needs no join."""

    __tablename__ = "build_known_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    build_uuid: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    signature: Mapped[str] = mapped_column(String(255), nullable=False)
    bug: Mapped[str] = mapped_column(String(2048), nullable=False)
    result: Mapped[str] = mapped_column(String(64), nullable=False)
    job: Mapped[str] = mapped_column(String(255), nullable=False)
    project: Mapped[str] = mapped_column(String(255), nullable=False)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_known_failures_signature", "signature", "end_time"),
        Index("uq_known_failures_build_signature", "build_uuid", "signature", unique=True),
    )
