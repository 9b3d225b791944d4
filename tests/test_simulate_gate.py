"""Every gate scenario of tests/scenarios, run by `lockmaster simulate` on the real workflows,
meets the expectations written in it (`expect:`, see tests/scenario_expect.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import Client

from lockmaster.simulate.loading import load_scenario
from lockmaster.simulate.runner import run_simulation
from tests.scenario_expect import check

SCENARIOS = Path(__file__).parent / "scenarios"
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("gate-*.yaml")), ids=lambda p: p.stem)
async def test_gate_scenario_meets_its_expectations(client: Client, path: Path) -> None:
    scenario = load_scenario(path)
    report = await run_simulation(scenario, client=client)
    problems = check(report, scenario.expect or {})
    assert problems == [], "\n".join(problems)
