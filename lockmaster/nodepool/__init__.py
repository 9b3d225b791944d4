"""The node pool: Nodepool's job (pure decisions; the workflow is in lockmaster.workflows.nodepool)."""
