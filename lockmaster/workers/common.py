"""What every worker role shares: the sandbox's passthrough modules, the project map."""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from lockmaster.config.models import LockmasterConfig


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox stays on; lockmaster's pure modules and pydantic pass through (deterministic,
    and importing them once per workflow run would be slow)."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "lockmaster.model", "lockmaster.pipelines", "lockmaster.nodepool", "lockmaster.leases",
            "lockmaster.config",
            "pydantic",
            "pydantic_core", "yaml",
        )
    )


def project_connections(config: LockmasterConfig) -> dict[str, str]:
    return {p.name: p.connection for p in config.projects}
