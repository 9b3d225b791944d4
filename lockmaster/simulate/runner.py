"""Run a scenario: the real orchestrator worker and the simulated executor on a Temporal server,
the simulated Gerrit in a temporary directory, the events applied in order, then the report.

Every run has its own workflow-ID and task-queue prefixes, so simulations (and tests) can share
a server. Whatever the run started is stopped at the end: workers, workflows still running
(the gate queues), the dev server if it started one, the temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.config.models import LockmasterConfig
from lockmaster.simulate.clock import Clock
from lockmaster.simulate.events import AppliedEvent, EventPlayer
from lockmaster.simulate.executor import HEARTBEAT, SimulatedExecutor, simulated_executor_worker
from lockmaster.simulate.gerrit import SimulatedGerrit
from lockmaster.simulate.layout import simulation_config
from lockmaster.simulate.loading import layout_data
from lockmaster.simulate.report import build_report
from lockmaster.simulate.scenario import Scenario
from lockmaster.simulate.server import temporal_client
from lockmaster.simulate.settle import busy, gate_ids
from lockmaster.starters.router import EventRouter
from lockmaster.starters.router_types import RouteAction
from lockmaster.workers.orchestrator import orchestrator_worker

log = logging.getLogger(__name__)

POLL = 0.05  # seconds between looks at whether the system has settled
STEADY_POLLS = 2  # settled this many looks in a row (a follow-up may start between two)


class SimulationError(Exception):
    """The simulation could not run to the end (the system never settled, a server failed)."""


@dataclass
class Settler:
    """Waits until nothing is in progress; gives up when nothing changes for `patience` s."""

    client: Client
    config: LockmasterConfig
    gerrit: SimulatedGerrit
    router: EventRouter
    patience: float
    executor: SimulatedExecutor | None = None
    recent: set[str] = field(default_factory=set)
    _seen_actions: int = 0

    def note(self, actions: list[RouteAction]) -> None:
        self.recent.update(a.workflow_id for a in actions if a.workflow_id)

    async def wait(self, where: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.patience
        steady, last = 0, None
        while True:
            self.note(self.router.actions[self._seen_actions:])  # change-merged deliveries
            self._seen_actions = len(self.router.actions)
            now_busy = [f"change-merged event of change {t.get_name()}"
                        for t in self.gerrit.pending if not t.done()]
            # A simulated build still running is work in progress: no need to ask Temporal.
            # (Querying a queue many times a second delays its own workflow tasks, which
            # would slow down what the simulation measures.)
            now_busy += [f"build {b.job} of change {b.number},{b.patchset}"
                         for b in (self.executor.builds if self.executor else [])
                         if b.result is None]
            if not now_busy:
                now_busy = await busy(self.client, self.config, self.recent)
            if not now_busy:
                steady += 1
                if steady >= STEADY_POLLS:
                    self.recent.clear()
                    return
            else:
                steady = 0
                if now_busy != last:
                    deadline = loop.time() + self.patience
                elif loop.time() > deadline:
                    raise SimulationError(
                        f"the system did not settle {where}: nothing changed for "
                        f"{self.patience:g}s; still in progress: {'; '.join(now_busy[:10])}"
                    )
                last = now_busy
            await asyncio.sleep(POLL)


async def run_simulation(
    scenario: Scenario,
    *,
    client: Client | None = None,
    address: str | None = None,
    time_scale: float = 1.0,
    patience: float | None = None,
    heartbeat: float = HEARTBEAT,
    data_converter: DataConverter | None = None,
) -> dict[str, Any]:
    """Play the scenario; returns the report (spec/scenarios.md). With no `client`, connects to
    `address`, or starts (and stops) a dev server of its own, with `data_converter` (default:
    pydantic; an encrypting one for a server whose payloads are encrypted). `heartbeat`:
    seconds between the simulated builds' heartbeats (how soon a cancelled one notices)."""
    if time_scale <= 0:
        raise ValueError("time_scale must be > 0")
    if heartbeat <= 0:
        raise ValueError("heartbeat must be > 0")
    if patience is None:
        longest = max([scenario.duration("default"), *scenario.durations.values()])
        patience = 300.0 + 2 * longest * time_scale
    if client is not None:
        return await _run(scenario, client, time_scale, patience, heartbeat)
    async with temporal_client(address, data_converter) as own:
        return await _run(scenario, own, time_scale, patience, heartbeat)


async def _run(
    scenario: Scenario, client: Client, time_scale: float, patience: float,
    heartbeat: float = HEARTBEAT,
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix=f"lockmaster-sim-{run_id}-") as tmp:
        config = simulation_config(
            layout_data(scenario), state_dir=Path(tmp) / "state",
            task_queue_prefix=f"sim-{run_id}", workflow_id_prefix=f"sim-{run_id}/",
        )
        clock = Clock()
        gerrit = SimulatedGerrit(scenario, config, clock)
        await asyncio.to_thread(gerrit.setup)
        executor = SimulatedExecutor(scenario, clock, time_scale=time_scale,
                                     logs_url=config.logs.url, heartbeat=heartbeat)
        router = EventRouter(config, client, gerrit.drivers)
        gerrit.on_merged = router.route
        player = EventPlayer(scenario, config, client, gerrit, router)
        settler = Settler(client, config, gerrit, router, patience, executor)
        workers = [orchestrator_worker(client, config, gerrit.drivers),
                   simulated_executor_worker(client, config, executor)]
        async with contextlib.AsyncExitStack() as stack:
            for worker in workers:
                await stack.enter_async_context(worker)
            try:
                applied, elapsed = await _play(scenario, clock, time_scale, player, settler)
            finally:
                await _stop_workflows(client, config)
        return build_report(
            title=scenario.title(), elapsed=elapsed, time_scale=time_scale, clock=clock,
            gerrit=gerrit, builds=executor.builds, events=applied,
        )


async def _play(
    scenario: Scenario, clock: Clock, time_scale: float, player: EventPlayer, settler: Settler
) -> tuple[list[AppliedEvent], float]:
    clock.start()
    applied: list[AppliedEvent] = []
    for index, event in enumerate(scenario.events):
        if event.at is not None:
            await clock.sleep_until(event.at * time_scale)
        elif index > 0:
            await settler.wait(f"before events[{index}] ({event.kind})")
        done = await player.apply(event, clock.now(), index)
        settler.note(done.actions)
        applied.append(done)
        log.info("%s %s at %.2f: %s", event.kind, done.change, done.at,
                 "; ".join(map(str, done.actions)) or done.error or "-")
    await settler.wait("after the last event")
    return applied, clock.now()


async def _stop_workflows(client: Client, config: LockmasterConfig) -> None:
    """Terminate what this run left running (the long-lived gate queues, or anything left by an
    error), so nothing of it lingers on a shared server."""
    prefix = config.temporal.workflow_id_prefix
    ids = set(gate_ids(config))
    query = f'WorkflowId STARTS_WITH "{prefix}" AND ExecutionStatus = "Running"'
    with contextlib.suppress(RPCError):
        ids.update([wf.id async for wf in client.list_workflows(query)])
    for wid in sorted(ids):
        try:
            await client.get_workflow_handle(wid).terminate(reason="the simulation ended")
        except RPCError as exc:
            if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                log.warning("could not terminate %s: %s", wid, exc)
