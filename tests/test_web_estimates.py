"""The status page's estimates from the results database (web/sources.estimates over
results/queries): recent job durations per project and pipeline, each queue's reset rate."""

from __future__ import annotations

import time
from pathlib import Path

from lockmaster.model.build import BuildResult, Result
from lockmaster.model.change import ChangeRef
from lockmaster.model.gate import ItemView, JobView, QueueStatus
from lockmaster.model.results import BuildRecord, BuildsetRecord
from lockmaster.results.db import ResultsDB
from lockmaster.starters.status import PipelineStatus
from lockmaster.web import sources
from lockmaster.web.context import WebContext
from lockmaster.web.status_view import status_view
from tests.deployment import make_config


def change(number: int) -> ChangeRef:
    return ChangeRef(connection="local", project="org/a", branch="master", number=number,
                     patchset=1)


async def test_durations_and_reset_rate_from_the_results_database(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, jobs=[{"name": "test", "run": "true"}],
        pipelines=[{"name": "gate", "manager": "dependent",
                    "trigger": [{"event": "comment-added"}]}],
        projects=[{"name": "org/a", "connection": "local", "queue": "shared",
                   "pipelines": {"gate": {"jobs": ["test"]}}}])
    db = ResultsDB.open(f"sqlite:///{tmp_path / 'results.db'}")
    try:
        now = time.time()
        builds = [BuildRecord.of(BuildResult(build_id=f"b{n}", job="test", result=Result.SUCCESS,
                                             started=now - 600 + n, ended=now - 600 + n + secs),
                                 buildset_uuid=f"s{n}", pipeline="gate", queue="shared",
                                 change=change(n))
                  for n, secs in enumerate((30.0, 40.0, 50.0), start=1)]
        db.record_builds(builds)
        for n, result in enumerate(("SUCCESS", "SUCCESS", "FAILURE", "SUCCESS"), start=1):
            db.record_buildset(BuildsetRecord(uuid=f"s{n}", pipeline="gate", queue="shared",
                                              change=change(n), result=result,
                                              started=now - 500, ended=now - 400))
        ctx = WebContext(config=config, state_dir=tmp_path, client=None, results=db)
        running = ItemView(change="9,1", project="org/a", branch="master", active=True,
                           failing=False, changes="9,1", merge="ok", enqueued_at=now - 10,
                           jobs=[JobView(name="test", voting=True, state="running",
                                         attempt=1, started=now - 10)])
        found = [PipelineStatus(pipeline="gate", manager="dependent", queues=[QueueStatus(
            queue="shared", pipeline="gate", window=20, idle=False, items=[running])])]
        estimates = await sources.estimates(ctx, found)
        assert estimates.source == "results"
        assert estimates.job_seconds[("org/a", "gate")] == {"test": 40.0}  # the median
        assert estimates.reset_rates == {"shared": 0.25}  # one of four items failed
        view = status_view(found, config, estimates=estimates, now=now)
        queue = view["pipelines"][0]["queues"][0]
        job = queue["items"][0]["jobs"][0]
        assert queue["reset_rate"] == 0.25
        assert job["estimated"] == 40.0 and round(job["remaining"]) == 30
        # Without a database: no estimates, and no error.
        none = await sources.estimates(WebContext(config, tmp_path, None, None), found)
        assert none.source is None and not none.job_seconds
    finally:
        db.close()
