"""Nodes jobs run on: providers (local, static; OpenStack through the node pool) and nodes."""
