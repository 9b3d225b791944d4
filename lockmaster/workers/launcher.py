"""The launcher role: the node pools' cloud calls (launch, delete, leak scans), on the launcher
task queue. Run it where the clouds' APIs and the new servers' SSH ports are reachable."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from lockmaster.activities.launcher import LauncherActivities
from lockmaster.config.models import LockmasterConfig
from lockmaster.temporal.task_queues import Role, task_queue


def launcher_worker(
    client: Client, config: LockmasterConfig, activities: LauncherActivities | None = None
) -> Worker:
    launcher = activities or LauncherActivities()
    return Worker(
        client,
        task_queue=task_queue(config.temporal.task_queue_prefix, Role.LAUNCHER),
        activities=[launcher.launch_node, launcher.delete_server, launcher.scan_pool],
        max_concurrent_activities=200,
    )
