"""Deliver one event: connect to Temporal, route it, close. Used by hooks and `change` commands."""

from __future__ import annotations

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.change import ReviewEvent
from lockmaster.review.registry import review_drivers
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
