"""The one place a Temporal client is built: address, namespace, TLS / API key, pydantic."""

from __future__ import annotations

from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from lockmaster.config.models import LockmasterConfig


def _tls(config: LockmasterConfig) -> TLSConfig | bool:
    tls = config.temporal.tls
    if tls is None:
        return False

    def read(path: object) -> bytes | None:
        return config.resolve(path).read_bytes() if path else None  # type: ignore[arg-type]

    return TLSConfig(
        server_root_ca_cert=read(tls.ca_cert),
        client_cert=read(tls.client_cert),
        client_private_key=read(tls.client_key),
        domain=tls.server_name,
    )


async def connect(config: LockmasterConfig, *, address: str | None = None) -> Client:
    api_key = None
    if config.temporal.api_key_file:
        api_key = config.resolve(config.temporal.api_key_file).read_text().strip()
    return await Client.connect(
        address or config.temporal.address,
        namespace=config.temporal.namespace,
        data_converter=pydantic_data_converter,
        tls=_tls(config),
        api_key=api_key,
    )


async def describe(client: Client, wid: str) -> WorkflowExecutionDescription | None:
    """The workflow's latest run, or None when there is none."""
    try:
        return await client.get_workflow_handle(wid).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
