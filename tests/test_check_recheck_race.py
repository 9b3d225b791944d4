"""A recheck that arrives after a check run reported but before its workflow closed starts the
next run (found by bench/chaos: the router answered "already in the pipeline" and the recheck was
lost). Stubs for Temporal: no server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from lockmaster.model.change import ChangeRef
from lockmaster.model.check import CheckStatus
from lockmaster.starters import check_runs
from lockmaster.starters.check_runs import RunStillReporting, Trigger, start_check
from tests.deployment import make_config

REF = ChangeRef(connection="local", project="org/p", branch="master", number=5, patchset=1)
RECHECK = Trigger("comment-added|local|org/p|5|1|recheck", at=1000.0, kind="comment-added")


class Description:
    def __init__(self, status: WorkflowExecutionStatus) -> None:
        self.status = status

    async def memo(self) -> dict[str, Any]:
        return {"trigger": "patchset-created|local|org/p|5|1", "trigger_at": 900.0}


class Handle:
    def __init__(self, run: Run) -> None:
        self.run = run

    async def query(self, *_: Any, **__: Any) -> CheckStatus:
        if self.run.phase is None:
            raise TimeoutError("no worker answers")
        return CheckStatus(change=REF, pipeline="check", phase=self.run.phase)

    async def result(self) -> None:
        await self.run.closed.wait()


class Started:
    id = "check/org/p/5/1"
    result_run_id = "run-2"


class Run:
    """The existing run: its phase (None: its worker does not answer) and whether it closes."""

    def __init__(self, phase: str | None, closes: bool) -> None:
        self.phase = phase
        self.closed = asyncio.Event()
        self.closes = closes
        self.starts: list[str] = []

    async def describe(self, _client: Any, _wid: str) -> Description:
        closed = self.closed.is_set()
        return Description(WorkflowExecutionStatus.COMPLETED if closed
                           else WorkflowExecutionStatus.RUNNING)

    def get_workflow_handle(self, _wid: str) -> Handle:
        if self.closes:
            asyncio.get_running_loop().call_later(0.05, self.closed.set)
        return Handle(self)

    async def start_workflow(self, *_: Any, id: str, **__: Any) -> Started:
        self.starts.append(id)
        return Started()


async def route(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(check_runs, "describe", run.describe)
    monkeypatch.setattr(check_runs, "REPORTING_WAIT", 0.3)
    config = make_config(tmp_path, projects=[{"name": "org/p", "connection": "local",
                                              "pipelines": {"check": {"jobs": ["unit"]}}}],
                         jobs=[{"name": "unit", "run": "true", "nodeset": "local"}])
    action = await start_check(run, config, "check", REF, RECHECK)  # type: ignore[arg-type]
    return action.action


async def test_a_recheck_while_the_run_tests_is_already_in_the_pipeline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run("running", closes=False)
    assert await route(run, tmp_path, monkeypatch) == "already-running"
    assert run.starts == []


async def test_a_recheck_after_the_report_starts_the_next_run_once_it_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run("reporting", closes=True)
    assert await route(run, tmp_path, monkeypatch) == "started"
    assert run.starts == ["check/org/p/5/1"]


async def test_a_run_still_reporting_keeps_the_recheck_for_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run("reporting", closes=False)
    with pytest.raises(RunStillReporting, match="starts the next run once it has closed"):
        await route(run, tmp_path, monkeypatch)
    assert run.starts == []  # not taken: its sender keeps it and hands it over again


async def test_a_run_whose_worker_does_not_answer_is_still_testing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(None, closes=False)
    assert await route(run, tmp_path, monkeypatch) == "already-running"
