"""Zuul's own scheduler and cross-repo test cases, ported as scenarios (tests/scenarios/zuul,
catalogued in docs/gate-semantics.md), run by `lockmaster simulate` on the real workflows, meet
the expectations Zuul's tests assert (`expect:`, see tests/scenario_expect.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import Client

from lockmaster.simulate.loading import load_scenario
from lockmaster.simulate.runner import run_simulation
from tests.scenario_expect import check

SCENARIOS = Path(__file__).parent / "scenarios" / "zuul"
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
async def test_zuul_case_meets_zuuls_expectations(client: Client, path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.expect, f"{path.name} has no `expect:`; a port must assert what Zuul does"
    report = await run_simulation(scenario, client=client)
    problems = check(report, scenario.expect)
    assert problems == [], "\n".join(problems)
