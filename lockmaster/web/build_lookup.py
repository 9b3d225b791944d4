"""Which recorded build a log belongs to (the log viewer's header and its "still running?").

A build's log_url is `<logs.url>/<log path>/` and the log path ends in the build id's first
seven characters (execution/logs.build_log_path). So the lookup asks the uuid index for ids
starting with a directory name of the path (a range scan, not a scan of every build's
log_url), then keeps the build whose log_url ends with that directory.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from lockmaster.results.schema import Build

_TRIED = 3  # directory levels looked at, deepest first (a file is at most a few levels down)


def _find(db: Any, relative: str) -> dict[str, Any] | None:
    parts = relative.rstrip("/").split("/")
    if not relative.endswith("/"):
        parts = parts[:-1]  # a file: its directories
    with db.reading() as conn:
        for depth in range(len(parts), max(0, len(parts) - _TRIED), -1):
            directory = "/".join(parts[:depth])
            prefix = parts[depth - 1]
            if not prefix:
                continue
            rows = conn.execute(
                select(Build.uuid, Build.job, Build.result, Build.end_time, Build.log_url)
                .where(Build.uuid >= prefix, Build.uuid < prefix + "\U0010ffff")
                .limit(50)).all()
            for row in rows:
                if row.log_url and row.log_url.rstrip("/").endswith("/" + directory):
                    return {"uuid": row.uuid, "job": row.job, "result": row.result,
                            "finished": row.end_time is not None}
    return None


async def build_for_log(db: Any, relative: str) -> dict[str, Any] | None:
    """The build whose log directory holds `relative`: {uuid, job, result, finished}."""
    return await asyncio.to_thread(_find, db, relative)


async def log_finished(db: Any, relative: str) -> bool | None:
    """True: a recorded (so finished) build owns the log; None: no build is recorded for it."""
    found = await build_for_log(db, relative)
    return None if found is None else True
