"""Recording builds and buildsets in the results database (lockmaster/results), on the
orchestrator. Idempotent: a row is written once per uuid, so a retried activity writes nothing
twice. The database is opened at the first recording (a database that is down does not stop
the worker from starting); an error propagates and Temporal retries within the workflow's
bounded policy. With no results database, recording is a no-op that says so once."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from temporalio import activity

from lockmaster.model.results import RecordBuildsetRequest, RecordBuildsRequest, RecordResult
from lockmaster.results.db import ResultsDB

log = logging.getLogger(__name__)

Opener = Callable[[], ResultsDB]


class ResultsActivities:
    """`opener` opens (and migrates) the database; None: recording is off (`why` says why)."""

    def __init__(self, opener: Opener | None, why: str = "no results database is configured"):
        self._opener = opener
        self._why = why
        self._db: ResultsDB | None = None
        self._lock = threading.Lock()
        self._said = False

    def _open(self) -> ResultsDB | None:
        with self._lock:
            if self._db is None and self._opener is not None:
                self._db = self._opener()
            return self._db

    def _disabled(self) -> RecordResult:
        if not self._said:
            self._said = True
            log.warning("results database: not recording builds (%s)", self._why)
        return RecordResult(disabled=self._why)

    @activity.defn(name="record_builds")
    async def record_builds(self, request: RecordBuildsRequest) -> RecordResult:
        db = await asyncio.to_thread(self._open)
        if db is None:
            return self._disabled()
        result = await asyncio.to_thread(db.record_builds, request.builds)
        for buildset in request.buildsets:
            written = await asyncio.to_thread(db.record_buildset, buildset)
            result.recorded += written.recorded
            result.already += written.already
        return result

    @activity.defn(name="record_buildset")
    async def record_buildset(self, request: RecordBuildsetRequest) -> RecordResult:
        db = await asyncio.to_thread(self._open)
        if db is None:
            return self._disabled()
        return await asyncio.to_thread(db.record_buildset, request.buildset)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
