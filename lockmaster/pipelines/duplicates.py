"""When two deliveries are one event: Gerrit may deliver an event twice (a hook and
stream-events, a retried hook). Only such a true duplicate is ignored; a second `recheck` or a
re-approval is a new event and is acted on (Zuul evaluates every event)."""

from __future__ import annotations

# A hook carries no event time: the time lockmaster received it stands in, within this margin.
RECEIPT_TOLERANCE = 5.0


def same_time(first: float, first_exact: bool, second: float, second_exact: bool) -> bool:
    """Do two deliveries with the same identity carry the same event time? `exact`: the time is
    the review system's own (stream-events' eventCreatedOn), not a receipt time."""
    if first_exact and second_exact:
        return abs(first - second) < 1e-3
    return abs(first - second) <= RECEIPT_TOLERANCE
