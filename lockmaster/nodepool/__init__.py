"""The node pool: Nodepool's job. Pure decisions here; the workflow is
lockmaster.workflows.nodepool, the cloud calls lockmaster.activities.launcher."""
