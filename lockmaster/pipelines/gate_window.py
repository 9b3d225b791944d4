"""A shared queue's window (Zuul's rate limiting of dependent pipelines): only the first
`window` items run jobs; every merge grows the window, every failure shrinks it.

- increase: linear (+factor, Zuul's default +1) or exponential (*factor), never past the ceiling;
- decrease: exponential (//factor, Zuul's default /2) or linear (-factor), never below the floor;
- window 0: no limit (Zuul's "window: 0").

The settings come from the pipeline, overridden per queue (`queues:` in lockmaster.yaml). A
reconfiguration (`reconfigure`) keeps a running queue's window as Zuul does: see there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from lockmaster.model.gate import QueueState

# The window settings of a QueueState (and of QueueReconfigure, which has the same names).
WINDOW_FIELDS = ("window", "window_floor", "window_ceiling", "window_increase_type",
                 "window_increase_amount", "window_decrease_type", "window_decrease_factor")

if TYPE_CHECKING:
    from lockmaster.config.models import LockmasterConfig, PipelineConfig


def is_active(state: QueueState, index: int) -> bool:
    """Does the item at this position run jobs?"""
    return state.window == 0 or index < state.window


def grow(state: QueueState) -> None:
    """A change merged."""
    if state.window == 0:
        return
    factor = state.window_increase_amount
    if state.window_increase_type == "exponential":
        grown = state.window * max(factor, 1)
    else:
        grown = state.window + factor
    if state.window_ceiling is not None:
        grown = min(grown, state.window_ceiling)
    state.window = max(grown, state.window)  # a ceiling below the window never shrinks it


def shrink(state: QueueState) -> None:
    """A change failed (or did not merge)."""
    if state.window == 0:
        return
    factor = state.window_decrease_factor
    if state.window_decrease_type == "linear":
        shrunk = state.window - factor
    else:
        shrunk = state.window // max(factor, 1)
    state.window = max(state.window_floor, shrunk)


def fixed(increase_type: str, increase: int, decrease_type: str, decrease: int) -> bool:
    """Settings under which the window never moves (Zuul's "static window")."""
    grows = increase > 1 if increase_type == "exponential" else increase > 0
    shrinks = decrease > 1 if decrease_type == "exponential" else decrease > 0
    return not grows and not shrinks


def reconfigure(state: QueueState, settings: Mapping[str, object]) -> None:
    """Take new window settings (WINDOW_FIELDS) on a running queue, as Zuul's reconfiguration:
    the queue keeps the window it has grown or shrunk to, raised to the new floor (Zuul's
    test_reconfigure_window_shrink: a smaller configured window does not shrink it); a fixed
    window (it never grows nor shrinks) takes the configured value (test_reconfigure_window_
    fixed). Beyond Zuul: "no limit" (0) is taken either way, a queue without a limit takes the
    new one, and a lower ceiling caps the window at once (Zuul's next merge would)."""
    live = state.window
    for name in WINDOW_FIELDS:
        setattr(state, name, settings[name])
    configured = state.window
    state.window_configured = configured
    if configured == 0:
        return  # no limit
    if live and not fixed(state.window_increase_type, state.window_increase_amount,
                          state.window_decrease_type, state.window_decrease_factor):
        state.window = live
    if state.window_ceiling is not None:
        state.window = min(state.window, state.window_ceiling)
    state.window = max(state.window, state.window_floor)


def window_settings(config: LockmasterConfig, pipeline: PipelineConfig,
                    queue: str) -> dict[str, object]:
    """The QueueState window fields for a queue: the pipeline's, overridden by the queue's."""
    settings: dict[str, object] = {
        "window": pipeline.window,
        "window_floor": pipeline.window_floor,
        "window_ceiling": pipeline.window_ceiling,
        "window_increase_type": pipeline.window_increase_type,
        "window_increase_amount": pipeline.increase_factor,
        "window_decrease_type": pipeline.window_decrease_type,
        "window_decrease_factor": pipeline.window_decrease_factor,
    }
    own = next((q for q in config.queues if q.name == queue), None)
    if own is not None:
        overrides = {
            "window": own.window, "window_floor": own.window_floor,
            "window_ceiling": own.window_ceiling,
            "window_increase_type": own.window_increase_type,
            "window_increase_amount": own.window_increase_factor,
            "window_decrease_type": own.window_decrease_type,
            "window_decrease_factor": own.window_decrease_factor,
        }
        settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings
