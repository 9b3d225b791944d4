"""A lockmaster deployment for one test: its own state directory, task queues and project names
on the session's Temporal server, with the real workers running in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.change import ChangeInfo, ReviewEvent
from lockmaster.model.check import CheckOutcome
from lockmaster.review.base import ReviewDriver
from lockmaster.review.local import LocalReviewDriver, LocalReviewStore
from lockmaster.review.registry import review_drivers
from lockmaster.starters.nodepool import ensure_pools
from lockmaster.starters.router import EventRouter, RouteAction
from lockmaster.workers.executor import executor_worker
from lockmaster.workers.orchestrator import orchestrator_worker


def make_config(
    tmp_path: Path,
    *,
    projects: list[dict[str, Any]],
    jobs: list[dict[str, Any]],
    connections: dict[str, Any] | None = None,
    pipelines: list[dict[str, Any]] | None = None,
    providers: list[dict[str, Any]] | None = None,
    prefix: str | None = None,
    packaging: dict[str, Any] | None = None,
) -> LockmasterConfig:
    """`packaging`: tests.distribution.packaging_config() for clean roots of the tests'
    distribution; by default package jobs use the node's own tools and no cache runs."""
    prefix = prefix or f"t-{uuid.uuid4().hex[:8]}"
    data = {
        "state-dir": str(tmp_path / "state"),
        "temporal": {"task-queue-prefix": prefix},
        "connections": connections or {"local": {"driver": "local"}},
        "logs": {"url": "http://logs.example.test"},
        "nodes": {
            "providers": providers
            # Named per test: its pool workflow (`nodepool/<provider>/main`) is the test's own.
            or [{"name": f"local-{prefix}", "driver": "local",
                 "pools": [{"name": "main", "labels": ["local"], "max-servers": 8}]}],
        },
        "pipelines": pipelines or [{
            "name": "check",
            "trigger": [
                {"event": "patchset-created"},
                {"event": "comment-added", "comment": r"(?i)^(Patch Set [0-9]+:)?\s*recheck\s*$"},
            ],
            "success": {"labels": {"Verified": 1}},
            "failure": {"labels": {"Verified": -1}},
        }],
        "jobs": jobs,
        "projects": projects,
        # clean-roots (not distribution: null): it survives the tests' model_dump(exclude_none)
        "packaging": packaging or {"clean-roots": False, "cache": {"enabled": False}},
    }
    return LockmasterConfig.model_validate(data)


def unique_project(name: str = "project") -> str:
    """Workflow IDs name the project: a unique one keeps tests apart on one server."""
    return f"t{uuid.uuid4().hex[:6]}/{name}"


@dataclass
class Deployment:
    config: LockmasterConfig
    client: Client
    drivers: dict[str, ReviewDriver]
    router: EventRouter
    workers: list[Worker] = field(default_factory=list)

    @property
    def store(self) -> LocalReviewStore:
        driver = self.drivers["local"]
        assert isinstance(driver, LocalReviewDriver)
        return driver.store

    def event(self, info: ChangeInfo, type_: str = "patchset-created", **extra: Any) -> ReviewEvent:
        return ReviewEvent(
            type=type_, connection=info.connection, project=info.project, branch=info.branch,
            change=info.number, patchset=info.patchset, commit=info.commit,
            change_id=info.change_id, url=info.url, **extra,
        )

    async def upload(self, project: str, **kwargs: Any) -> tuple[ChangeInfo, list[RouteAction]]:
        info = await asyncio.to_thread(self.store.upload, project, **kwargs)
        return info, await self.router.route(self.event(info))

    async def comment(self, number: int, text: str) -> list[RouteAction]:
        info = await asyncio.to_thread(self.store.vote, number, {}, author="dev", message=text)
        return await self.router.route(
            self.event(info, "comment-added", comment=f"Patch Set {info.patchset}:\n\n{text}",
                       author="dev")
        )

    def handle(self, workflow_id: str) -> WorkflowHandle[Any, CheckOutcome]:
        return self.client.get_workflow_handle(workflow_id, result_type=CheckOutcome)

    async def outcome(self, workflow_id: str, timeout: float = 60) -> CheckOutcome:
        return await asyncio.wait_for(self.handle(workflow_id).result(), timeout)

    def reports(self, number: int) -> list[dict[str, Any]]:
        return [m for m in self.store.record(number)["messages"] if m["author"] == "lockmaster"]


@contextlib.asynccontextmanager
async def deployment(
    client: Client,
    config: LockmasterConfig,
    *,
    executor: bool = True,
    heartbeat_timeout: float = 30.0,
    drivers: dict[str, ReviewDriver] | None = None,
) -> AsyncIterator[Deployment]:
    drivers = drivers or review_drivers(config)
    router = EventRouter(config, client, drivers, build_heartbeat_timeout=heartbeat_timeout)
    dep = Deployment(config, client, drivers, router)
    dep.workers.append(orchestrator_worker(client, config, drivers))
    if executor:
        dep.workers.append(executor_worker(client, config, drivers, heartbeat_interval=0.5))
    async with contextlib.AsyncExitStack() as stack:
        for worker in dep.workers:
            await stack.enter_async_context(worker)
        await ensure_pools(client, config)
        yield dep
