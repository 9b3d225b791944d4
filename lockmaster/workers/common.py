"""What every worker role shares: the sandbox's passthrough modules, the project map."""

from __future__ import annotations

import logging

from temporalio.worker import Worker
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


log = logging.getLogger(__name__)


def whole_activations(worker: Worker) -> Worker:
    """Have the worker's workflows see everything that reached a workflow task before they
    run. By default the Python SDK (1.35) runs a workflow on an activation's signals first and
    applies its activity results after: a long-lived workflow woken by a signal could continue
    as new before the results that came in the same task were applied, and carry their work
    as still in flight while its results were in the old run (the gate benchmark's queue
    waited ~85 s for 14 builds that had finished so). The SDK records the newer behaviour per
    workflow task (a flag in the history) and means to make it its default; running workflows
    switch at their next task, recorded histories replay as they ran."""
    from temporalio.worker._workflow_instance import _WorkflowLogicFlag

    flag = getattr(_WorkflowLogicFlag, "PROCESS_WORKFLOW_ACTIVATION_JOBS_AS_SINGLE_BATCH", None)
    setter = getattr(worker, "_set_default_workflow_logic_flag", None)
    if flag is None or setter is None:  # a later SDK: its default (tests/test_activations)
        log.debug("workflow logic flags not settable; the SDK's default applies")
        return worker
    setter(flag, enabled=True)
    return worker


def project_connections(config: LockmasterConfig) -> dict[str, str]:
    return {p.name: p.connection for p in config.projects}
