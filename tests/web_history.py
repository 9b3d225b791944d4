"""Helpers of the web history tests: a real SQLite results database filled through the results
package's own record functions, and an aiohttp test client over the whole web app."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.build import KnownFailure
from lockmaster.model.change import ChangeRef
from lockmaster.model.results import BuildRecord, BuildsetRecord, ChangeAhead
from lockmaster.results import ResultsDB
from lockmaster.web.app import build_app
from lockmaster.web.context import WebContext
from tests.ports import free_port

LOGS_URL = "http://logs.example"


def open_db(tmp_path: Path) -> ResultsDB:
    return ResultsDB.open(f"sqlite:///{tmp_path / 'results.sqlite'}")


def change(number: int, project: str = "org/app", patchset: int = 1) -> ChangeRef:
    return ChangeRef(connection="gerrit", project=project, branch="main", number=number,
                     patchset=patchset, url=f"https://review.example/{number}")


def build(uuid: str, job: str, result: str, ended: float, *, number: int = 1,
          project: str = "org/app", pipeline: str = "check", buildset: str = "bs-1",
          duration: float = 60.0, known: list[str] | None = None,
          queue: str | None = None) -> BuildRecord:
    ref = change(number, project)
    log_path = f"{number % 100:02d}/{number}/1/{pipeline}/{job}/{uuid[:7]}"
    return BuildRecord(
        uuid=uuid, buildset_uuid=buildset, pipeline=pipeline, queue=queue, change=ref,
        job=job, result=result, started=ended - duration, ended=ended,
        log_url=f"{LOGS_URL}/{log_path}/",
        changes=[ChangeAhead(connection="gerrit", project=project, number=number,
                             patchset=1)],
        known_failures=[KnownFailure(signature=s, bug=f"https://bugs.example/{s}")
                        for s in known or []])


def buildset(uuid: str, result: str, ended: float, *, number: int = 1,
             pipeline: str = "check", queue: str | None = None,
             restarted_behind: int = 0) -> BuildsetRecord:
    return BuildsetRecord(uuid=uuid, pipeline=pipeline, queue=queue, change=change(number),
                          result=result, started=ended - 100, ended=ended,
                          restarted_behind=restarted_behind, reason=None
                          if result == "SUCCESS" else "a job failed")


def config(tmp_path: Path, **extra: object) -> LockmasterConfig:
    return LockmasterConfig.model_validate(
        {"state_dir": str(tmp_path / "state"),
         "logs": {"root": str(tmp_path / "logs"), "url": LOGS_URL}, **extra})


async def client(cfg: LockmasterConfig, db: ResultsDB | None, tmp_path: Path) -> TestClient:
    app = build_app(WebContext(config=cfg, state_dir=tmp_path, client=None, results=db))
    test_client = TestClient(TestServer(app, host="127.0.0.1", port=free_port()))
    await test_client.start_server()
    return test_client
