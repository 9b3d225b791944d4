"""Apply a scenario's events: change the simulated Gerrit as a user would, then send the same
ReviewEvent that `lockmaster change ...` sends (or, for operator events, the operator command).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.change import ChangeInfo, ReviewEvent
from lockmaster.review.base import ReviewError
from lockmaster.simulate.gerrit import DEVELOPER, REVIEWER, SimulatedGerrit, own_file
from lockmaster.simulate.references import operator_pipeline, promote_queue
from lockmaster.simulate.scenario import (
    AbandonEvent,
    ApproveEvent,
    CommentEvent,
    DeleteVoteEvent,
    DequeueEvent,
    EnqueueEvent,
    EventBase,
    MergeEvent,
    NewPatchsetEvent,
    PromoteEvent,
    RedeliverEvent,
    RestoreEvent,
    Scenario,
    SetPrivateEvent,
    SettleEvent,
    SetWipEvent,
    UnapproveEvent,
    UnsetPrivateEvent,
    UnsetWipEvent,
    UploadEvent,
)
from lockmaster.starters import operator
from lockmaster.starters.router import EventRouter
from lockmaster.starters.router_types import RouteAction

APPROVAL = {"Code-Review": 2, "Workflow": 1}


@dataclass
class AppliedEvent:
    kind: str
    change: str | list[str] | None
    at: float
    actions: list[RouteAction] = field(default_factory=list)
    error: str | None = None  # the review system refused it (e.g. approving an abandoned change)
    extra: dict[str, Any] = field(default_factory=dict)


def review_event(info: ChangeInfo, type_: str, **extra: Any) -> ReviewEvent:
    """As `lockmaster change` builds it (cli/change_cmd.py), with the time the simulated
    Gerrit created it (as stream-events' eventCreatedOn: a redelivery carries the same)."""
    extra.setdefault("created", time.time())
    return ReviewEvent(
        type=type_, connection=info.connection, project=info.project,  # type: ignore[arg-type]
        branch=info.branch, change=info.number, patchset=info.patchset, commit=info.commit,
        change_id=info.change_id, url=info.url, **extra,
    )


def _labels_comment(patchset: int, labels: dict[str, int]) -> str:
    return f"Patch Set {patchset}:" + "".join(f" {k}{v:+d}" for k, v in labels.items())


@dataclass
class EventPlayer:
    scenario: Scenario
    config: LockmasterConfig
    client: Client
    gerrit: SimulatedGerrit
    router: EventRouter
    # The review event each scenario event sent (by its index), for `redeliver`.
    sent: dict[int, ReviewEvent] = field(default_factory=dict)
    _index: int = field(default=-1, init=False)  # of the event being applied

    async def apply(self, event: EventBase, at: float, index: int = -1) -> AppliedEvent:
        names = event.change_names()
        shown: str | list[str] | None = (
            names if isinstance(event, PromoteEvent) else (names[0] if names else None)
        )
        applied = AppliedEvent(event.kind, shown, at)
        self._index = index
        try:
            applied.actions = await self._apply(event, applied)
        except ReviewError as exc:
            applied.error = str(exc)
        return applied

    async def _apply(self, event: EventBase, applied: AppliedEvent) -> list[RouteAction]:
        if isinstance(event, SettleEvent):
            return []
        if isinstance(event, RedeliverEvent):
            applied.extra["redeliver"] = event.redeliver
            earlier = self.sent.get(event.redeliver)
            if earlier is None:
                raise ReviewError(f"events[{event.redeliver}] sent no review event")
            applied.change = self.gerrit.name_of(earlier.change or 0)  # the spec's `change`
            return await self.router.route(earlier)
        if isinstance(event, EnqueueEvent | DequeueEvent | PromoteEvent):
            return [await self._operator(event, applied)]
        name = event.change
        number = self.gerrit.numbers[name]
        store = self.gerrit.store_of(name)
        if isinstance(event, UploadEvent):
            info = await asyncio.to_thread(store.info, number)
            return await self._send(review_event(info, "patchset-created"))
        if isinstance(event, NewPatchsetEvent):
            patchset = (await asyncio.to_thread(store.info, number)).patchset + 1
            files = event.files or {own_file(number): f"{name} patchset {patchset}\n"}
            info = await asyncio.to_thread(store.new_patchset, number, files)
            return await self._send(review_event(info, "patchset-created"))
        if isinstance(event, ApproveEvent | UnapproveEvent):
            labels = {"Workflow": 0}
            if isinstance(event, ApproveEvent):
                labels = event.labels if event.labels is not None else APPROVAL
            info = await asyncio.to_thread(store.vote, number, labels, author=REVIEWER)
            if isinstance(event, ApproveEvent) and event.silent:
                return []
            return await self._send(review_event(
                info, "comment-added", comment=_labels_comment(info.patchset, labels),
                author=REVIEWER, approvals=labels,
            ))
        if isinstance(event, CommentEvent):
            applied.extra["text"] = event.text
            info = await asyncio.to_thread(store.vote, number, {}, author=DEVELOPER,
                                           message=event.text)
            return await self._send(review_event(
                info, "comment-added", comment=f"Patch Set {info.patchset}:\n\n{event.text}",
                author=DEVELOPER,
            ))
        if isinstance(event, AbandonEvent):
            info = await asyncio.to_thread(store.abandon, number, author=DEVELOPER)
            return await self._send(review_event(info, "change-abandoned"))
        if isinstance(event, MergeEvent):
            info = await asyncio.to_thread(store.info, number)
            await asyncio.to_thread(store.submit, info.ref())
            info = await asyncio.to_thread(store.info, number)
            return await self._send(review_event(info, "change-merged"))
        if isinstance(event, RestoreEvent):
            info = await asyncio.to_thread(store.restore, number, author=DEVELOPER)
            return await self._send(review_event(info, "change-restored", author=DEVELOPER))
        if isinstance(event, DeleteVoteEvent):
            before = (await asyncio.to_thread(store.info, number)).approvals
            info = await asyncio.to_thread(store.delete_vote, number, event.label,
                                           author=REVIEWER)
            return await self._send(review_event(
                info, "vote-deleted", author=REVIEWER, approvals={event.label: 0},
                old_approvals={event.label: before.get(event.label, 0)}))
        if isinstance(event, SetWipEvent | UnsetWipEvent):
            wip = isinstance(event, SetWipEvent)
            info = await asyncio.to_thread(store.set_wip, number, wip, author=DEVELOPER)
            return await self._send(review_event(info, "wip-state-changed", author=DEVELOPER,
                                                 wip=wip))
        if isinstance(event, SetPrivateEvent | UnsetPrivateEvent):
            private = isinstance(event, SetPrivateEvent)
            info = await asyncio.to_thread(store.set_private, number, private, author=DEVELOPER)
            return await self._send(review_event(info, "private-state-changed",
                                                 author=DEVELOPER, private=private))
        raise AssertionError(f"unhandled event kind {event.kind}")

    async def _send(self, event: ReviewEvent) -> list[RouteAction]:
        self.sent[self._index] = event
        return await self.router.route(event)

    async def _operator(
        self, event: EnqueueEvent | DequeueEvent | PromoteEvent, applied: AppliedEvent
    ) -> RouteAction:
        pipeline = operator_pipeline(self.config, event)
        assert pipeline is not None  # validated
        applied.extra["pipeline"] = pipeline
        if isinstance(event, PromoteEvent):
            queue = promote_queue(self.scenario, self.config, event)
            assert queue is not None  # validated
            keys = [(await asyncio.to_thread(self.gerrit.info, n)).ref().key
                    for n in event.promote]
            return await operator.promote(self.client, self.config, pipeline, queue, keys)
        name = event.change
        number = self.gerrit.numbers[name]
        if isinstance(event, EnqueueEvent):
            return await operator.enqueue(self.client, self.config, self.gerrit.drivers,
                                          pipeline, self.gerrit.connection_of(name), number)
        project = self.scenario.changes[name].project
        return await operator.dequeue(self.client, self.config, pipeline, project, number)
