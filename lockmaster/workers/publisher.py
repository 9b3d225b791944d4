"""The publisher role: the stable repository and its mirrors (publish_stable, sync_mirror), on
the publisher task queue. Run it on the publishing host: it holds the signing key's GnuPG home
and the mirrors' SSH keys."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from lockmaster.activities.publishing import PublishingActivities
from lockmaster.config.models import LockmasterConfig
from lockmaster.git.cache import RepoCache
from lockmaster.review.base import ReviewDriver
from lockmaster.temporal.task_queues import Role, task_queue
from lockmaster.workers.common import project_connections


def publisher_worker(client: Client, config: LockmasterConfig,
                     drivers: dict[str, ReviewDriver]) -> Worker:
    cache = RepoCache(config.state_path / "git" / "publisher",
                      lambda connection, project: drivers[connection].git_url(project))
    activities = PublishingActivities(config, cache, project_connections(config))
    return Worker(
        client,
        task_queue=task_queue(config.temporal.task_queue_prefix, Role.PUBLISHER),
        activities=[activities.publish_stable, activities.sync_mirror],
        # Syncs to several mirrors run side by side (one slow mirror holds no other).
        max_concurrent_activities=20,
    )
