"""`lockmaster rerun PROJECT CHANGE JOB` on bad input: one line saying what, where and how to fix
it, exit 2, and Temporal is never asked (nothing is started). The rerun itself, on a real
Temporal server: tests/test_job_graph_artifacts.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from lockmaster.cli import rerun_cmd
from lockmaster.review.local import LocalReviewStore
from lockmaster.temporal import client as temporal_client

APP = typer.Typer()
APP.command()(rerun_cmd.rerun)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalReviewStore:
    """The embedded configuration's local review system, with demo/hello and
    demo/lockmaster-hello; connecting to Temporal fails the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOCKMASTER_CONFIG", raising=False)
    monkeypatch.setenv("LOCKMASTER_STATE_DIR", str(tmp_path / "state"))

    async def connect(cfg: object) -> object:
        raise AssertionError("Temporal was asked")

    monkeypatch.setattr(temporal_client, "connect", connect)
    store = LocalReviewStore(tmp_path / "state" / "review" / "local", "local")
    for project in ("demo/hello", "demo/lockmaster-hello"):
        store.create_project(project, {"README": "x\n"})
    return store


def rerun(*args: str) -> Result:
    return CliRunner().invoke(APP, list(args))


def one_line(result: Result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return lines[0]


def test_a_change_that_does_not_exist(store: LocalReviewStore) -> None:
    result = rerun("demo/hello", "42", "lint")
    assert result.exit_code == 2
    assert one_line(result) == ("error: change 42 does not exist on connection 'local' (where "
                                "demo/hello's changes are): check the number")


def test_a_change_of_another_project_names_its_project(store: LocalReviewStore) -> None:
    other = store.upload("demo/lockmaster-hello", files={"a": "a\n"}, subject="a")
    result = rerun("demo/hello", str(other.number), "lint")
    assert result.exit_code == 2
    assert one_line(result) == (
        f"error: change {other.number} is a change of demo/lockmaster-hello, not demo/hello: "
        f"lockmaster rerun demo/lockmaster-hello {other.number} lint")


def test_a_closed_change(store: LocalReviewStore) -> None:
    change = store.upload("demo/hello", files={"a": "a\n"}, subject="a")
    store.abandon(change.number, author="dev")
    result = rerun("demo/hello", str(change.number), "lint")
    assert result.exit_code == 2
    assert one_line(result) == (f"error: change {change.number} (demo/hello) is abandoned: only "
                                "the jobs of an open change are rerun")


@pytest.mark.parametrize(("args", "said"), [
    (["org/none", "1", "lint"], "error: project 'org/none' is not configured (projects: "
                                "demo/hello, demo/lockmaster-hello, demo/debian-package)"),
    (["demo/hello", "1", "lint", "--pipeline", "nope"],
     "error: pipeline 'nope' is not configured (pipelines: check, gate)"),
    (["demo/hello", "1", "nope"], "error: job 'nope' is not in demo/hello's check pipeline "
                                  "(jobs: lint, unit, docs)"),
    (["demo/hello", "1", "lint", "--pipeline", "gate"],
     "error: gate is a gate: its builds belong to the queue; dequeue and enqueue the change "
     "to run them again"),
])
def test_other_bad_input(store: LocalReviewStore, args: list[str], said: str) -> None:
    store.upload("demo/hello", files={"a": "a\n"}, subject="a")
    result = rerun(*args)
    assert result.exit_code == 2
    assert one_line(result) == said
