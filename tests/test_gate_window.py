"""A shared queue's window (lockmaster/pipelines/gate_window.py): who runs jobs, how merges grow
it and failures shrink it, and the settings a queue takes from its pipeline and `queues:`."""

from __future__ import annotations

from typing import Any

import pytest

from lockmaster.config.models import LockmasterConfig, PipelineConfig, QueueConfig, Trigger
from lockmaster.model.build import Result
from lockmaster.model.gate import QueueState
from lockmaster.pipelines import gate_window
from tests.gate_harness import Gate, deps, info, request


def state(window: int = 8, **fields: Any) -> QueueState:
    base: dict[str, Any] = {"queue": "q", "pipeline": "gate", "window": window,
                            "window_floor": 3, "window_increase_amount": 1,
                            "window_decrease_factor": 2}
    base.update(fields)
    return QueueState(**base)


# --- is_active -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "index", "active"), [
    (3, 0, True), (3, 2, True), (3, 3, False), (3, 10, False), (1, 0, True), (1, 1, False),
    (0, 0, True), (0, 500, True),  # 0: no limit
])
def test_is_active(window: int, index: int, active: bool) -> None:
    assert gate_window.is_active(state(window), index) is active


# --- grow ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "after"), [
    ({}, 9),  # Zuul's default: linear +1
    ({"window_increase_amount": 3}, 11),
    ({"window_increase_amount": 0}, 8),
    ({"window_increase_type": "exponential", "window_increase_amount": 2}, 16),
    ({"window_increase_type": "exponential", "window_increase_amount": 3}, 24),
    ({"window_increase_type": "exponential", "window_increase_amount": 0}, 8),  # never * 0
    ({"window_ceiling": 10, "window_increase_amount": 5}, 10),
    ({"window_ceiling": 12, "window_increase_type": "exponential",
      "window_increase_amount": 2}, 12),
    ({"window_ceiling": 8}, 8),
    ({"window_ceiling": 5}, 8),  # a ceiling below the window never shrinks it
], ids=["linear-default", "linear-3", "linear-0", "exp-2", "exp-3", "exp-0", "ceiling-linear",
        "ceiling-exp", "at-ceiling", "below-ceiling"])
def test_a_merge_grows_the_window(fields: dict[str, Any], after: int) -> None:
    s = state(8, **fields)
    gate_window.grow(s)
    assert s.window == after


def test_an_unlimited_window_stays_unlimited() -> None:
    s = state(0, window_increase_type="exponential", window_increase_amount=2,
              window_decrease_type="linear", window_decrease_factor=5)
    gate_window.grow(s)
    assert s.window == 0
    gate_window.shrink(s)
    assert s.window == 0


# --- shrink --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "fields", "after"), [
    (20, {}, 10),  # Zuul's default: halved
    (21, {}, 10),
    (20, {"window_decrease_factor": 3}, 6),
    (8, {}, 4),
    (5, {}, 3),  # never below the floor
    (3, {}, 3),
    (20, {"window_decrease_type": "linear", "window_decrease_factor": 1}, 19),
    (20, {"window_decrease_type": "linear", "window_decrease_factor": 4}, 16),
    (5, {"window_decrease_type": "linear", "window_decrease_factor": 4}, 3),
    (20, {"window_floor": 12}, 12),
    (20, {"window_floor": 1, "window_decrease_factor": 50}, 1),
], ids=["exp-default", "exp-odd", "exp-3", "exp-8", "exp-floor", "at-floor", "linear-1",
        "linear-4", "linear-floor", "high-floor", "floor-1"])
def test_a_failure_shrinks_the_window(window: int, fields: dict[str, Any], after: int) -> None:
    s = state(window, **fields)
    gate_window.shrink(s)
    assert s.window == after


def test_repeated_failures_settle_on_the_floor_and_merges_climb_back() -> None:
    s = state(20, window_floor=4)
    for expected in (10, 5, 4, 4):
        gate_window.shrink(s)
        assert s.window == expected
    for expected in (5, 6):
        gate_window.grow(s)
        assert s.window == expected


# --- settings from the layout -------------------------------------------------------------


def layout(pipeline: dict[str, Any] | None = None,
           queues: list[dict[str, Any]] | None = None) -> tuple[LockmasterConfig,
                                                                PipelineConfig]:
    gate = PipelineConfig.model_validate({
        "name": "gate", "manager": "dependent",
        "trigger": [Trigger(event="comment-added", approval={"Workflow": 1})],
        **(pipeline or {})})
    config = LockmasterConfig.model_validate({
        "pipelines": [gate], "queues": [QueueConfig.model_validate(q) for q in queues or []]})
    return config, gate


DEFAULTS = {"window": 20, "window_floor": 3, "window_ceiling": None,
            "window_increase_type": "linear", "window_increase_amount": 1,
            "window_decrease_type": "exponential", "window_decrease_factor": 2}


def test_a_pipeline_without_window_options_has_zuuls_defaults() -> None:
    config, gate = layout()
    assert gate_window.window_settings(config, gate, "shared") == DEFAULTS


def test_the_pipelines_window_options() -> None:
    config, gate = layout({"window": 6, "window-floor": 2, "window-ceiling": 30,
                           "window-increase-type": "exponential",
                           "window-increase-factor": 3, "window-decrease-type": "linear",
                           "window-decrease-factor": 2})
    assert gate_window.window_settings(config, gate, "shared") == {
        "window": 6, "window_floor": 2, "window_ceiling": 30,
        "window_increase_type": "exponential", "window_increase_amount": 3,
        "window_decrease_type": "linear", "window_decrease_factor": 2}


def test_the_older_name_of_the_increase_factor_still_counts() -> None:
    config, gate = layout({"window-increase-amount": 4})
    assert gate_window.window_settings(config, gate, "q")["window_increase_amount"] == 4


def test_a_queue_overrides_what_it_gives_and_only_for_itself() -> None:
    config, gate = layout({"window": 6, "window-decrease-factor": 3},
                          [{"name": "shared", "window": 0},
                           {"name": "fast", "window-floor": 5, "window-ceiling": 9,
                            "window-increase-type": "exponential",
                            "window-increase-factor": 2, "window-decrease-type": "linear",
                            "window-decrease-factor": 1}])
    assert gate_window.window_settings(config, gate, "shared") == {
        **DEFAULTS, "window": 0, "window_decrease_factor": 3}
    assert gate_window.window_settings(config, gate, "fast") == {
        "window": 6, "window_floor": 5, "window_ceiling": 9,
        "window_increase_type": "exponential", "window_increase_amount": 2,
        "window_decrease_type": "linear", "window_decrease_factor": 1}
    assert gate_window.window_settings(config, gate, "other") == {
        **DEFAULTS, "window": 6, "window_decrease_factor": 3}


# --- the window in a queue ------------------------------------------------------------------------


def gate_with(settings: dict[str, object], window: int) -> Gate:
    gate = Gate(window=window)
    for name, value in settings.items():
        setattr(gate.state, name, value)
    gate.state.window = window
    return gate


def test_a_queue_configured_exponential_grows_and_shrinks_linearly() -> None:
    config, pipeline = layout(queues=[{"name": "q", "window-floor": 2,
                                       "window-increase-type": "exponential",
                                       "window-increase-factor": 2,
                                       "window-decrease-type": "linear",
                                       "window-decrease-factor": 1}])
    gate = gate_with(gate_window.window_settings(config, pipeline, "q"), window=2)
    changes = range(1, 7)
    for n in changes:
        gate.ask(request(n), deps(info(n)))
    assert [n for n in changes if gate.builds(n)] == [1, 2]  # the window: 2
    gate.pass_all(1)
    assert gate.state.window == 4
    assert [n for n in changes if gate.builds(n)] == [2, 3, 4, 5]
    gate.finish(2, "merge", Result.FAILURE)  # at the head: reported, it leaves
    assert gate.state.window == 3
    assert [n for n in changes if gate.builds(n)] == [3, 4, 5]
    gate.finish(3, "merge", Result.FAILURE)
    gate.finish(4, "merge", Result.FAILURE)
    assert gate.state.window == 2


def test_a_merge_conflict_shrinks_the_window() -> None:
    gate = Gate(window=8)
    gate.conflicts = {"1,1"}
    gate.ask(request(1), deps(info(1)))
    assert gate.actions_of(1) == ["merge-conflict"]
    assert gate.state.window == 4


def test_an_unlimited_queue_runs_everything() -> None:
    gate = Gate(window=0)
    for n in range(1, 31):
        gate.ask(request(n), deps(info(n)))
    assert all(gate.builds(n) for n in range(1, 31))
    gate.finish(1, "merge", Result.FAILURE)
    assert gate.state.window == 0
