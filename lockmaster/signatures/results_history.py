"""The stored history `signatures test` tries a signature on: builds from the results database
(through its public queries, lockmaster.results.queries), as history.StoredBuild."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from lockmaster.config.models import LockmasterConfig
from lockmaster.signatures.history import StoredBuild


class HistoryError(Exception):
    """The history cannot be read; the message says why and what to do."""


def _get(row: Any, *names: str) -> Any:
    for name in names:
        if isinstance(row, dict) and name in row:
            return row[name]
        if hasattr(row, name):
            return getattr(row, name)
    return None


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), UTC)


def _known(row: Any) -> list[str]:
    known = _get(row, "known_failures") or []
    return [str(_get(k, "signature") if not isinstance(k, str) else k) for k in known]


def as_stored(row: Any) -> StoredBuild:
    change = _get(row, "change")
    project = _get(row, "project") or _get(change, "project") or ""
    return StoredBuild(uuid=str(_get(row, "uuid", "build_id")), project=str(project),
                       job=str(_get(row, "job")), result=str(_get(row, "result")),
                       log_url=_get(row, "log_url"),
                       ended=_when(_get(row, "end_time", "ended")), known=_known(row))


def stored_builds(config: LockmasterConfig, *, since_days: float, limit: int
                  ) -> list[StoredBuild]:
    """The builds that ended in the last `since_days` days, newest first, at most `limit`."""
    try:
        from lockmaster.results import queries
    except ImportError as exc:
        raise HistoryError(f"this lockmaster cannot read the results database ({exc})"
                           ) from None
    since = time.time() - since_days * 86400
    try:
        rows = queries.list_builds(config, since=since, limit=limit)
    except Exception as exc:  # the database's own errors: say which and where
        raise HistoryError(f"cannot read the builds from the results database: {exc}"
                           ) from None
    return [as_stored(row) for row in rows]
