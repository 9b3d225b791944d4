"""The stored history `signatures test` tries a signature on: builds from the results database
(through its public queries, lockmaster.results.queries), as history.StoredBuild."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from lockmaster.config.models import LockmasterConfig
from lockmaster.signatures.history import StoredBuild

if TYPE_CHECKING:
    from lockmaster.results.queries import BuildRow


class HistoryError(Exception):
    """The history cannot be read; the message says why and what to do."""


def as_stored(row: BuildRow) -> StoredBuild:
    ended = row.end_time
    if ended is not None and ended.tzinfo is None:
        ended = ended.replace(tzinfo=UTC)
    return StoredBuild(uuid=row.uuid, project=row.project, job=row.job, result=row.result,
                       log_url=row.log_url, ended=ended,
                       known=[known.signature for known in row.known_failures])


def stored_builds(config: LockmasterConfig, *, since_days: float, limit: int
                  ) -> list[StoredBuild]:
    """The builds that ended in the last `since_days` days, newest first, at most `limit`
    (every attempt: a RETRY's log may show a known infrastructure bug)."""
    from lockmaster.results.connect import open_results
    from lockmaster.results.db import ResultsDBError
    from lockmaster.results.queries import MAX_LIMIT, BuildFilter, list_builds

    since = datetime.now(UTC) - timedelta(days=since_days)
    try:
        db = open_results(config, migrate=False)
    except ResultsDBError as exc:
        raise HistoryError(f"cannot open the results database: {exc}") from None
    found: list[StoredBuild] = []
    offset: int | None = 0
    try:
        while offset is not None and len(found) < limit:
            page = list_builds(db, BuildFilter(since=since, offset=offset,
                                               limit=min(MAX_LIMIT, limit - len(found))))
            found += [as_stored(row) for row in page.builds]
            offset = page.next_offset
    except Exception as exc:  # the database's own errors (SQLAlchemy's): say which
        raise HistoryError(f"cannot read the builds from the results database: "
                           f"{type(exc).__name__}: {exc}") from None
    finally:
        db.close()
    return found
