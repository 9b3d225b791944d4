"""The event router: every review event, from a hook, stream-events or the local connection,
becomes workflow starts and cancellations here.

Duplicates (the same event from a hook and from stream-events, or a retried hook) start nothing:
a patchset is checked once on upload (the workflow ID names the patchset), and a comment that
already started the latest run of its check is recognised by its identity in the run's memo.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.change import ChangeInfo, ChangeRef, ReviewEvent
from lockmaster.model.check import CheckInput, ReportLabels
from lockmaster.model.gate import ChangeUpdated
from lockmaster.pipelines.freeze import freeze_jobs
from lockmaster.pipelines.queues import queue_name
from lockmaster.pipelines.triggers import requirements_met, triggered_pipelines
from lockmaster.review.base import ReviewDriver
from lockmaster.starters.operator import enqueue_change, gate_id_for
from lockmaster.starters.publish import start_publish
from lockmaster.starters.router_types import RouteAction
from lockmaster.temporal import search_attributes
from lockmaster.temporal.task_queues import Role, task_queue
from lockmaster.workflows.check import CheckWorkflow, check_workflow_id

log = logging.getLogger(__name__)

# A comment event seen again within this many seconds of starting a run is the same event
# delivered twice (hooks carry no event timestamp to tell them apart exactly).
DUPLICATE_WINDOW = 600.0


@dataclass
class EventRouter:
    config: LockmasterConfig
    client: Client
    drivers: dict[str, ReviewDriver]
    build_heartbeat_timeout: float = 30.0
    actions: list[RouteAction] = field(default_factory=list)

    async def route(self, event: ReviewEvent) -> list[RouteAction]:
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
        if info is not None and event.type == "change-abandoned":
            out += await self._cancel_checks(event, info.patchset, everything=True,
                                             reason="change abandoned")
        if info is not None and event.type == "patchset-created" and event.patchset:
            if event.patchset < info.patchset:
                # An old patchset's event arriving late: superseded already, start nothing.
                change = None
            # A new patchset supersedes the old ones' checks.
            out += await self._cancel_checks(event, event.patchset - 1, everything=False,
                                             reason="new patchset")
        if info is not None:
            out += await self._update_gates(event, info)
        if info is not None and event.type == "change-merged":
            out += await self._publish(event, info)
        for pipeline in triggered_pipelines(self.config, event):
            if change is None or change.status != "NEW":
                out.append(RouteAction("ignored", detail=f"{pipeline.name}: change is not open"))
                continue
            if not requirements_met(pipeline, change.approvals):
                out.append(RouteAction("ignored", detail=f"{pipeline.name}: requirements not met"))
                continue
            if pipeline.manager == "dependent":
                out += await self._enqueue(pipeline.name, event, change)
            else:
                out.append(await self._start_check(pipeline.name, event, change))
        if not out:
            out.append(RouteAction("ignored", detail=f"{event.type}: no pipeline triggered"))
        for action in out:
            log.info("%s %s %s: %s", event.type, event.project, event.change, action)
        self.actions += out
        return out

    async def _start_check(
        self, pipeline: str, event: ReviewEvent, change: ChangeInfo
    ) -> RouteAction:
        patchset = event.patchset if event.type == "patchset-created" and event.patchset else (
            change.patchset
        )
        ref = change.ref().model_copy(update={"patchset": patchset})
        if event.type == "patchset-created" and event.commit:
            ref = ref.model_copy(update={"commit": event.commit})
        wid = check_workflow_id(ref, pipeline, self.config.temporal.workflow_id_prefix)
        existing = await self._describe(wid)
        if existing is not None:
            if existing.status == WorkflowExecutionStatus.RUNNING:
                return RouteAction("already-running", wid, "change is already in the pipeline")
            if event.type == "patchset-created":
                return RouteAction("duplicate", wid, "this patchset was already checked")
            memo = await existing.memo()
            started = existing.start_time.timestamp() if existing.start_time else 0.0
            if memo.get("trigger") == event.identity() and time.time() - started < DUPLICATE_WINDOW:
                return RouteAction("duplicate", wid, "the same event started the last run")
        pipe = self.config.pipeline(pipeline)
        inp = CheckInput(
            change=ref,
            pipeline=pipeline,
            jobs=freeze_jobs(self.config, ref.project, pipeline),
            labels=ReportLabels(
                start=pipe.start.labels if pipe.start else None,
                success=pipe.success.labels,
                failure=pipe.failure.labels,
            ),
            trigger=event.identity(),
            task_queue_prefix=self.config.temporal.task_queue_prefix,
            precedence=pipe.node_precedence,
            build_heartbeat_timeout=self.build_heartbeat_timeout,
        )
        handle = await self.client.start_workflow(
            CheckWorkflow.run,
            inp,
            id=wid,
            task_queue=task_queue(self.config.temporal.task_queue_prefix, Role.ORCHESTRATOR),
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            # Two deliveries racing each other: the second joins the first's run.
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes(
                search_attributes.pairs_for_change(
                    connection=ref.connection, project=ref.project, branch=ref.branch,
                    change=ref.number, patchset=ref.patchset, pipeline=pipeline,
                )
            ),
            memo={"trigger": event.identity()},
            static_summary=f"{pipeline}: {ref.project} change {ref.key} ({event.type})",
        )
        return RouteAction("started", handle.id, f"run {handle.result_run_id}")

    async def _enqueue(
        self, pipeline: str, event: ReviewEvent, change: ChangeInfo
    ) -> list[RouteAction]:
        """Into the shared queue (signal-with-start); the change leaves superseded pipelines."""
        pipe = self.config.pipeline(pipeline)
        out = []
        for other in pipe.supersedes:
            out += await self._cancel_checks(event, change.patchset, everything=True,
                                             reason=f"entered {pipeline}", pipelines=[other])
        action = await enqueue_change(self.client, self.config, pipeline, change.ref(),
                                      trigger=event.identity(),
                                      build_heartbeat_timeout=self.build_heartbeat_timeout)
        return [*out, action]

    async def _publish(self, event: ReviewEvent, info: ChangeInfo) -> list[RouteAction]:
        """A merged change of a project that publishes packages: rebuild and publish them."""
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
        """Tell the queues holding this change that it changed (approvals, status, patchset)."""
        if event.type not in ("comment-added", "patchset-created", "change-abandoned",
                              "change-merged"):
            return []
        out = []
        update = ChangeUpdated(project=info.project, number=info.number, patchset=info.patchset,
                               status=info.status, approvals=info.approvals)
        for pipeline in self.config.pipelines:
            if pipeline.manager != "dependent":
                continue
            wid = gate_id_for(self.config, pipeline.name, queue_name(self.config, info.project))
            try:
                await self.client.get_workflow_handle(wid).signal("change-updated", update)
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                continue
            out.append(RouteAction("updated", wid, f"{info.number},{info.patchset} {info.status}"))
        return out

    async def _describe(self, wid: str):  # type: ignore[no-untyped-def]
        try:
            return await self.client.get_workflow_handle(wid).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    async def _cancel_checks(
        self, event: ReviewEvent, upto: int, everything: bool, reason: str,
        pipelines: list[str] | None = None,
    ) -> list[RouteAction]:
        """Cancel running checks of this change: of patchsets 1..upto, or of every patchset."""
        assert event.change is not None
        query = (
            f'{search_attributes.PROJECT.name} = "{event.project}" AND '
            f"{search_attributes.CHANGE.name} = {event.change} AND "
            f"{search_attributes.CONNECTION.name} = \"{event.connection}\" AND "
            'ExecutionStatus = "Running"'
        )
        names = pipelines or [p.name for p in self.config.pipelines if p.manager == "independent"]
        query += " AND (" + " OR ".join(
            f'{search_attributes.PIPELINE.name} = "{n}"' for n in names) + ")"
        ids: set[str] = set()
        async for wf in self.client.list_workflows(query):
            if wf.search_attributes.get(search_attributes.PATCHSET.name):
                ps = wf.typed_search_attributes.get(search_attributes.PATCHSET)
                if everything or (ps is not None and ps <= upto):
                    ids.add(wf.id)
        # Visibility lags a little behind starts: also try the IDs we can name.
        for name in names:
            for ps in range(1, upto + 1):
                ids.add(check_workflow_id(_ref(event, ps), name,
                                          self.config.temporal.workflow_id_prefix))
        out = []
        for wid in sorted(ids):
            desc = await self._describe(wid)
            if desc is not None and desc.status == WorkflowExecutionStatus.RUNNING:
                await self.client.get_workflow_handle(wid).cancel()
                out.append(RouteAction("cancelled", wid, reason))
        return out


def _ref(event: ReviewEvent, patchset: int) -> ChangeRef:
    return ChangeRef(
        connection=event.connection, project=event.project, branch=event.branch or "",
        number=event.change or 0, patchset=patchset,
    )
