"""Test-environment leases: the broker's pure decisions (the workflow is
lockmaster.workflows.testenv, the TE-host side lockmaster.testenv)."""
