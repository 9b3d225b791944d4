"""The event router: every review event, from a hook, stream-events or the local connection,
becomes workflow starts, signals and cancellations here (Zuul's trigger event processing).

Every event that can change whether a change may be gated reaches the queues that hold it or
wait with it (`change-updated`: approvals, status, patchset, WIP, private); every trigger event
is evaluated afresh (a re-approval or a second `recheck` acts again). Only a true duplicate (one
event delivered twice, e.g. by a hook and by stream-events: same event, same time) starts
nothing: a patchset is checked once on upload (the workflow ID names the patchset), a comment
that already started the latest run is recognised by its identity and time, and a queue ignores
a change it already holds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.config.models import LockmasterConfig
from lockmaster.metrics import observe_event
from lockmaster.model.change import ChangeInfo, ChangeRef, ReviewEvent
from lockmaster.model.gate import ChangeUpdated
from lockmaster.pipelines.queues import queue_name
from lockmaster.pipelines.triggers import requirements_met, triggered_pipelines
from lockmaster.review.base import ReviewDriver
from lockmaster.starters.check_runs import (
    Trigger,
    cancel_checks,
    notify_dependents,
    start_check,
    wait_dequeue_reported,
)
from lockmaster.starters.operator import enqueue_change, gate_id_for
from lockmaster.starters.publish import start_publish
from lockmaster.starters.router_types import RouteAction
from lockmaster.temporal.busy import when_not_busy

log = logging.getLogger(__name__)

# The events after which the queues holding the change look at it again.
UPDATES_QUEUES = ("comment-added", "patchset-created", "change-abandoned", "change-merged",
                  "vote-deleted", "change-restored", "wip-state-changed",
                  "private-state-changed")


@dataclass
class EventRouter:
    config: LockmasterConfig
    client: Client
    drivers: dict[str, ReviewDriver]
    build_heartbeat_timeout: float = 30.0
    actions: list[RouteAction] = field(default_factory=list)

    async def route(self, event: ReviewEvent) -> list[RouteAction]:
        observe_event(event.type, event.created)  # event intake lag (docs/metrics.md)
        out: list[RouteAction] = []
        if event.connection not in self.drivers:
            return [RouteAction("ignored", detail=f"unknown connection {event.connection!r}")]
        if self.config.project(event.project) is None:
            return [RouteAction("ignored", detail=f"project {event.project!r} is not configured")]
        info = (
            await self.drivers[event.connection].get_change(event.change)
            if event.change is not None else None
        )
        change = info
        independent = [p.name for p in self.config.pipelines if p.manager == "independent"]
        if info is not None and event.type == "change-abandoned":
            out += await cancel_checks(self.client, self.config, info.ref(), upto=None,
                                       pipelines=independent, reason="change abandoned")
        if info is not None and event.type == "patchset-created" and event.patchset:
            if event.patchset < info.patchset:
                # An old patchset's event arriving late: superseded already, start nothing.
                change = None
            # A new patchset supersedes the old ones' checks (Zuul's dequeue-on-new-patchset).
            superseding = [p.name for p in self.config.pipelines if p.manager == "independent"
                           and p.dequeue_on_new_patchset]
            superseded = await cancel_checks(
                self.client, self.config, _ref(event, event.patchset),
                upto=event.patchset - 1, pipelines=superseding, reason="new patchset")
            await wait_dequeue_reported(self.client, superseded)
            out += superseded
            if change is not None and event.patchset > 1:
                out += await notify_dependents(self.client, self.config, info.ref(),
                                               independent)
        if info is not None:
            out += await self._update_gates(event, info)
        if info is not None and event.type == "change-merged":
            out += await self._publish(event, info)
        # Hooks carry no event time: the time it is routed (the hook runs as Gerrit sends it).
        at = event.at()
        trigger = Trigger(event.identity(), at if at is not None else time.time(), event.type,
                          exact=at is not None)
        for pipeline in triggered_pipelines(self.config, event):
            if change is None or change.status != "NEW":
                out.append(RouteAction("ignored", detail=f"{pipeline.name}: change is not open"))
                continue
            if not requirements_met(pipeline, change.approvals):
                out.append(RouteAction("ignored", detail=f"{pipeline.name}: requirements not met"))
                continue
            if pipeline.manager == "dependent":
                out += await self._enqueue(pipeline.name, trigger, change)
            else:
                patchset = event.patchset if event.type == "patchset-created" and event.patchset \
                    else change.patchset
                ref = change.ref().model_copy(update={"patchset": patchset})
                if event.type == "patchset-created" and event.commit:
                    ref = ref.model_copy(update={"commit": event.commit})
                out.append(await start_check(self.client, self.config, pipeline.name, ref,
                                             trigger,
                                             build_heartbeat_timeout=self.build_heartbeat_timeout))
        if not out:
            out.append(RouteAction("ignored", detail=f"{event.type}: no pipeline triggered"))
        for action in out:
            log.info("%s %s %s: %s", event.type, event.project, event.change, action)
        self.actions += out
        return out

    async def _enqueue(self, pipeline: str, trigger: Trigger,
                       change: ChangeInfo) -> list[RouteAction]:
        """Into the shared queue (signal-with-start); the change leaves superseded pipelines."""
        pipe = self.config.pipeline(pipeline)
        out = []
        for other in pipe.supersedes:
            out += await cancel_checks(self.client, self.config, change.ref(), upto=None,
                                       pipelines=[other], reason=f"entered {pipeline}")
        await wait_dequeue_reported(self.client, out)
        action = await enqueue_change(self.client, self.config, pipeline, change.ref(),
                                      trigger=trigger.identity, trigger_at=trigger.at,
                                      trigger_exact=trigger.exact,
                                      build_heartbeat_timeout=self.build_heartbeat_timeout)
        return [*out, action]

    async def _publish(self, event: ReviewEvent, info: ChangeInfo) -> list[RouteAction]:
        """A merged change of a project that publishes packages: publish them (the gate's build
        when it tested the merged tree, else a rebuild)."""
        project = self.config.project(info.project)
        if project is None or project.publish is None:
            return []
        if not event.newrev:
            return [RouteAction("ignored", detail=f"publish: the change-merged event of "
                                                  f"{info.number} names no merged commit "
                                                  "(newrev)")]
        ref = info.ref().model_copy(update={"commit": event.newrev})
        return [await start_publish(self.client, self.config, ref,
                                    build_heartbeat_timeout=self.build_heartbeat_timeout)]

    async def _update_gates(self, event: ReviewEvent, info: ChangeInfo) -> list[RouteAction]:
        """Tell the queues holding (or waiting with) this change that it changed."""
        if event.type not in UPDATES_QUEUES:
            return []
        if event.type == "patchset-created" and info.patchset == 1:
            return []  # a change just created: no queue holds it, or anything needing it yet
        out = []
        update = ChangeUpdated(project=info.project, number=info.number, patchset=info.patchset,
                               status=info.status, approvals=info.approvals, wip=info.wip,
                               private=info.private)
        queue = queue_name(self.config, info.project, info.branch)
        for pipeline in self.config.pipelines:
            if pipeline.manager != "dependent":
                continue
            wid = gate_id_for(self.config, pipeline.name, queue)
            try:
                handle = self.client.get_workflow_handle(wid)
                await when_not_busy(lambda h=handle: h.signal("change-updated", update))
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                continue
            out.append(RouteAction("updated", wid, f"{info.number},{info.patchset} {info.status}"))
        return out


def _ref(event: ReviewEvent, patchset: int) -> ChangeRef:
    return ChangeRef(
        connection=event.connection, project=event.project, branch=event.branch or "",
        number=event.change or 0, patchset=patchset,
    )
