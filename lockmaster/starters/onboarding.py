"""Starting and reading `onboard/<cloud>/<region>` workflows (the `lockmaster cloud` commands).

Inputs are checked against the configuration before anything starts: an unknown cloud or region
is an `OnboardingInputError` naming what exists; a region already being onboarded is
`AlreadyRunning`. A finished run may be started again (after fixing what preflight reported).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from lockmaster.config.clouds import CloudConfig
from lockmaster.config.models import LockmasterConfig
from lockmaster.model.onboarding import OnboardingStatus, OnboardInput, onboard_id
from lockmaster.temporal import search_attributes
from lockmaster.temporal.task_queues import Role, task_queue
from lockmaster.workflows.onboarding import OnboardingWorkflow

QUERY_TIMEOUT = timedelta(seconds=10)  # a running workflow whose worker is down never answers


class OnboardingInputError(Exception):
    """The operator named a cloud or region the configuration does not have."""


class AlreadyRunning(Exception):
    pass


@dataclass
class RegionState:
    cloud: str
    region: str
    workflow_id: str
    execution: str | None  # Temporal's status (RUNNING, COMPLETED, ...); None: never started
    status: OnboardingStatus | None  # None: not started, or its worker did not answer


def find_cloud(config: LockmasterConfig, name: str) -> CloudConfig:
    for cloud in config.clouds:
        if cloud.name == name:
            return cloud
    known = ", ".join(c.name for c in config.clouds) or "none; add them under clouds:"
    raise OnboardingInputError(f"no cloud {name!r} (configured: {known})")


def regions_of(cloud: CloudConfig, region: str | None) -> list[str]:
    if region is None:
        return list(cloud.regions)
    if region not in cloud.regions:
        raise OnboardingInputError(f"cloud {cloud.name!r} has no region {region!r} "
                                   f"(configured: {', '.join(cloud.regions)})")
    return [region]


def find_region(config: LockmasterConfig, name: str) -> tuple[CloudConfig, str]:
    """`REGION` or `CLOUD/REGION`; a region name several clouds have must name the cloud."""
    if "/" in name:
        cloud_name, region = name.split("/", 1)
        cloud = find_cloud(config, cloud_name)
        return cloud, regions_of(cloud, region)[0]
    matches = [(c, name) for c in config.clouds if name in c.regions]
    if not matches:
        known = ", ".join(f"{c.name}/{r}" for c in config.clouds for r in c.regions) or "none"
        raise OnboardingInputError(f"no configured cloud has region {name!r} (regions: {known})")
    if len(matches) > 1:
        both = ", ".join(f"{c.name}/{name}" for c, _ in matches)
        raise OnboardingInputError(f"region {name!r} is in several clouds: name one of {both}")
    return matches[0]


def workflow_id(config: LockmasterConfig, cloud: str, region: str) -> str:
    return onboard_id(cloud, region, config.temporal.workflow_id_prefix)


async def start_onboarding(client: Client, config: LockmasterConfig, cloud_name: str,
                           region: str, user: str) -> WorkflowHandle:
    cloud = find_cloud(config, cloud_name)
    regions_of(cloud, region)
    base = config.source.parent if config.source is not None else None
    dns = config.dns.resolved(base) if config.dns is not None else None
    request = OnboardInput(cloud=cloud.resolved(base), region=region, requested_by=user,
                           dns=dns)
    wid = workflow_id(config, cloud.name, region)
    try:
        return await client.start_workflow(
            OnboardingWorkflow.run, request,
            id=wid,
            task_queue=task_queue(config.temporal.task_queue_prefix, Role.ORCHESTRATOR),
            # A finished onboarding may run again (preflight after the donor fixed the cloud).
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(search_attributes.PROVIDER, cloud.name)]),
            static_summary=f"onboard cloud {cloud.name} region {region} (requested by {user})",
        )
    except WorkflowAlreadyStartedError:
        raise AlreadyRunning(f"{wid} is already running; see `lockmaster cloud status "
                             f"{cloud.name}/{region}`") from None


async def region_state(client: Client, config: LockmasterConfig, cloud: str,
                       region: str) -> RegionState:
    wid = workflow_id(config, cloud, region)
    handle = client.get_workflow_handle(wid, result_type=OnboardingStatus)
    state = RegionState(cloud, region, wid, None, None)
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return state
        raise
    state.execution = described.status.name if described.status else None
    try:
        if described.status == WorkflowExecutionStatus.COMPLETED:
            state.status = await handle.result()
        elif described.status == WorkflowExecutionStatus.RUNNING:
            state.status = await handle.query("status", result_type=OnboardingStatus,
                                              rpc_timeout=QUERY_TIMEOUT)
    except (RPCError, WorkflowQueryFailedError):
        pass  # shown as "no answer": the execution status still says where it stands
    return state
