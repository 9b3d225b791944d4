"""Deliver one event: connect to Temporal, route it, close. Used by hooks and `change` commands.

A hook's event that cannot be delivered is kept on disk (starters/kept_events.py) and delivered
before the next hook's event: Gerrit runs each hook once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.change import ReviewEvent
from lockmaster.review.registry import review_drivers
from lockmaster.starters.kept_events import KeptEvents
from lockmaster.starters.router import EventRouter, RouteAction
from lockmaster.temporal.client import connect


async def dispatch(config: LockmasterConfig, event: ReviewEvent) -> list[RouteAction]:
    client = await connect(config)
    drivers = review_drivers(config)
    try:
        return await EventRouter(config, client, drivers).route(event)
    finally:
        for driver in drivers.values():
            await driver.aclose()


@dataclass
class Delivery:
    actions: list[RouteAction] = field(default_factory=list)
    flushed: int = 0  # kept events of earlier hooks handed over first
    kept: Path | None = None  # this event, kept for later: why in `error`
    error: str | None = None


async def dispatch_or_keep(config: LockmasterConfig, event: ReviewEvent | None,
                           spool: KeptEvents) -> Delivery:
    """Hand over the events kept earlier, oldest first, then `event`; whatever cannot be
    handed over now (this event included, when an earlier one still fails) is kept."""
    out = Delivery()
    drivers = review_drivers(config)
    try:
        client = await connect(config)
        router = EventRouter(config, client, drivers)
        out.flushed = await spool.flush(router.route)
        if event is not None:
            out.actions = await router.route(event)
    except Exception as exc:  # Temporal or the review system unreachable, or worse: kept
        out.error = f"{type(exc).__name__}: {exc}"
        if event is not None:
            out.kept = spool.keep(event)
    finally:
        for driver in drivers.values():
            await driver.aclose()
    return out
