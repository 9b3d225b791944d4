"""The orchestrator role: runs the workflows and the control-plane activities (review reports,
git merges), on the orchestrator task queue."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from lockmaster.activities.cloud_resources import ACTIVITIES as CLOUD_RESOURCE_ACTIVITIES
from lockmaster.activities.dns import DnsActivities
from lockmaster.activities.merger import MergerActivities
from lockmaster.activities.onboarding import OnboardingActivities
from lockmaster.activities.promotion import PromotionActivities
from lockmaster.activities.results import ResultsActivities
from lockmaster.activities.review import ReviewActivities
from lockmaster.config.models import LockmasterConfig
from lockmaster.git.cache import RepoCache
from lockmaster.review.base import ReviewDriver
from lockmaster.review.local import LocalReviewDriver
from lockmaster.temporal.outliving import started_activities
from lockmaster.temporal.task_queues import Role, task_queue
from lockmaster.workers.common import project_connections, whole_activations, workflow_runner
from lockmaster.workflows.autohold import AutoholdWorkflow
from lockmaster.workflows.check import CheckWorkflow
from lockmaster.workflows.detached import DetachedWorkWorkflow
from lockmaster.workflows.gate import GateQueueWorkflow
from lockmaster.workflows.nodepool import NodePoolWorkflow
from lockmaster.workflows.onboarding import OnboardingWorkflow
from lockmaster.workflows.publish import PublishWorkflow
from lockmaster.workflows.publish_queue import PublishQueueWorkflow
from lockmaster.workflows.testenv import TEBrokerWorkflow

WORKFLOWS = [CheckWorkflow, GateQueueWorkflow, NodePoolWorkflow, AutoholdWorkflow,
             TEBrokerWorkflow, PublishWorkflow, PublishQueueWorkflow, DetachedWorkWorkflow,
             OnboardingWorkflow]


def announce_merges(client: Client, config: LockmasterConfig,
                    drivers: dict[str, ReviewDriver]) -> None:
    """Local connections announce their merges as Gerrit does (a change-merged event), so merged
    packages get published. Only where a project publishes: elsewhere nothing listens."""
    if not any(p.publish for p in config.projects):
        return
    from lockmaster.starters.router import EventRouter  # the router starts these workflows

    router = EventRouter(config, client, drivers)
    for driver in drivers.values():
        if isinstance(driver, LocalReviewDriver):
            driver.on_merged = router.route


def results_activities(config: LockmasterConfig) -> ResultsActivities:
    """Builds and buildsets go to the results database (opened at the first recording)."""
    if not config.results.enabled:
        return ResultsActivities(None, "results.enabled is false in the configuration")
    from lockmaster.results.connect import open_results

    return ResultsActivities(lambda: open_results(config))


def orchestrator_worker(
    client: Client, config: LockmasterConfig, drivers: dict[str, ReviewDriver]
) -> Worker:
    cache = RepoCache(
        config.state_path / "git" / "merger",
        lambda connection, project: drivers[connection].git_url(project),
    )
    announce_merges(client, config, drivers)
    review = ReviewActivities(drivers)
    merger = MergerActivities(cache, drivers, project_connections(config))
    # The publications' look-up of the gate's builds: the merger's cache holds what it tested.
    promotion = PromotionActivities(client, cache, project_connections(config))
    results = results_activities(config)
    return whole_activations(Worker(
        client,
        task_queue=task_queue(config.temporal.task_queue_prefix, Role.ORCHESTRATOR),
        workflows=WORKFLOWS,
        activities=[review.post_report, review.get_change, review.submit,
                    review.report_and_submit,
                    review.report_and_submit_batch,
                    merger.resolve_dependencies, merger.find_dependents,
                    merger.prepare_state, merger.prepare_states,
                    promotion.find_gate_build, started_activities,
                    results.record_builds, results.record_buildset,
                    OnboardingActivities().preflight,
                    # The region mirror's DNS step, its compensation, its preflight
                    # (PowerDNS; docs/clouds.md).
                    *DnsActivities().all(),
                    # Declarative keypairs, security groups, images (docs/clouds.md).
                    *CLOUD_RESOURCE_ACTIVITIES],
        workflow_runner=workflow_runner(),
    ))
