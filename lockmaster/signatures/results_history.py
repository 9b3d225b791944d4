"""The stored history `signatures test` tries a signature on: builds from the results database
(through its public queries, lockmaster.results.queries), as history.StoredBuild."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
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
    from lockmaster.results.connect import open_results, results_url
    from lockmaster.results.db import ResultsDBError
    from lockmaster.results.queries import MAX_LIMIT, BuildFilter, list_builds

    since = datetime.now(UTC) - timedelta(days=since_days)
    try:
        url = results_url(config)
    except ResultsDBError as exc:
        raise HistoryError(f"cannot open the results database: {exc}") from None
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not Path(url.database).is_file():
        # Not created here (opening would): nothing was recorded, nothing to try it on.
        raise HistoryError(f"no results database at {url.database}: no build was recorded "
                           "there (the orchestrator records them; check results.url and "
                           "--config)")
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
    except Exception as exc:  # the database's own errors (SQLAlchemy's): the cause's first line
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise HistoryError(f"cannot read the builds from the results database: {cause} "
                           "(is it migrated? the orchestrator migrates it when it starts)"
                           ) from None
    finally:
        db.close()
    return found
