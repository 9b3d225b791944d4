"""Every gate scenario of tests/scenarios, run by `lockmaster simulate` on the real workflows,
meets the expectations written in it (`expect:`, see tests/scenario_expect.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
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


async def test_changes_finished_behind_the_head_are_submitted_in_one_batch(client: Client) -> None:
    """B, C and D finish while the slow head A still runs: A's success starts one batch of the
    four (one activity, not four round trips), which stops at C's refused submit."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    scenario = load_scenario(SCENARIOS / "gate-batch-submit-refused.yaml")
    report = await run_simulation(scenario, client=client)
    assert check(report, scenario.expect or {}) == []
    batches = []
    query = (f'WorkflowType = "GateQueueWorkflow" AND '
             f'StartTime > "{since.isoformat().replace("+00:00", "Z")}"')
    async for wf in client.list_workflows(query):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        for event in history.events:
            if event.HasField("activity_task_scheduled_event_attributes"):
                attrs = event.activity_task_scheduled_event_attributes
                if attrs.activity_type.name == "report_and_submit_batch":
                    data = json.loads(attrs.input.payloads[0].data)
                    batches.append([i["submit"]["change"]["number"] for i in data["items"]])
    assert len(batches) == 1 and len(batches[0]) == 4, batches
    assert batches[0] == sorted(batches[0])  # in queue order: A, B, C, D
