"""Wait for a check to finish and describe its outcome (CLI `--wait`, the main job's demo)."""

from __future__ import annotations

from urllib.parse import quote

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.check import CheckOutcome
from lockmaster.temporal.client import connect


def web_link(config: LockmasterConfig, workflow_id: str) -> str:
    return (f"{config.temporal.web_url}/namespaces/{config.temporal.namespace}/workflows/"
            f"{quote(workflow_id, safe='')}")


async def wait_for_check(config: LockmasterConfig, workflow_id: str) -> str:
    client = await connect(config)
    outcome = await client.get_workflow_handle(workflow_id, result_type=CheckOutcome).result()
    return describe_outcome(config, workflow_id, outcome)


def describe_outcome(config: LockmasterConfig, workflow_id: str, outcome: CheckOutcome) -> str:
    return (f"{workflow_id}: {outcome.result}\n{outcome.message}\n"
            f"Web UI: {web_link(config, workflow_id)}")
