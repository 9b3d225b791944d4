"""The one place a Temporal client is built: address, namespace, TLS / API key, pydantic."""

from __future__ import annotations

import ssl
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from lockmaster.config.models import LockmasterConfig

# Where a deployment's certificates come from (docs/deployment.md, "Certificates").
MAKE_CERTS = "deploy/make-certs.sh"


class TemporalConfigError(RuntimeError):
    """The configuration names a file the client cannot use (certificates, the codec's key
    file); `str()` says which, where, and what to do. A RuntimeError, as Temporal's own
    connection failures are: callers report both the same way (lockmaster is not connected,
    nothing was started); those that can tell them apart exit 2 for this one."""


class TemporalTLSError(TemporalConfigError):
    """temporal.tls names a file that cannot be used."""


def _where(config: LockmasterConfig) -> str:
    return f" (in {config.source})" if config.source is not None else ""


def _read(config: LockmasterConfig, key: str, path: Path, marker: bytes) -> tuple[Path, bytes]:
    """The file `key` names, resolved against the config file, and its bytes: it must exist, be
    readable and hold PEM (`marker`: what a PEM block of the expected kind starts with)."""
    resolved = config.resolve(path)
    fix = (f"create the certificates with {MAKE_CERTS} and put them there (docker-compose mounts "
           "them per service), or correct temporal.tls." + key)
    if not resolved.exists():
        raise TemporalTLSError(
            f"temporal.tls.{key}: {resolved} does not exist{_where(config)}; {fix}")
    if not resolved.is_file():
        raise TemporalTLSError(
            f"temporal.tls.{key}: {resolved} is not a file{_where(config)}; {fix}")
    try:
        data = resolved.read_bytes()
    except OSError as exc:
        raise TemporalTLSError(
            f"temporal.tls.{key}: cannot read {resolved}{_where(config)}: {exc.strerror}; "
            "the user lockmaster runs as needs read access") from None
    if marker not in data:
        raise TemporalTLSError(
            f"temporal.tls.{key}: {resolved} holds no PEM {marker.decode().strip('-')}"
            f"{_where(config)}; expected a file that starts with '{marker.decode()}...', "
            f"as {MAKE_CERTS} writes")
    return resolved, data


def tls_config(config: LockmasterConfig) -> TLSConfig | bool:
    """temporal.tls as temporalio's TLSConfig (False: plain connection). Every file is checked
    here, before any connection: missing, unreadable, not PEM, a key that is not the
    certificate's, with a message that names the key, the file and the fix."""
    tls = config.temporal.tls
    if tls is None:
        return False
    ca = cert = key = None
    if tls.ca_cert is not None:
        ca_path, ca = _read(config, "ca-cert", tls.ca_cert, b"-----BEGIN CERTIFICATE-----")
        try:
            ssl.create_default_context(cafile=str(ca_path))
        except ssl.SSLError as exc:
            raise TemporalTLSError(
                f"temporal.tls.ca-cert: {ca_path} is not a usable CA certificate"
                f"{_where(config)}: {exc.reason or exc}") from None
    if tls.client_cert is not None and tls.client_key is not None:
        cert_path, cert = _read(config, "client-cert", tls.client_cert,
                                b"-----BEGIN CERTIFICATE-----")
        key_path, key = _read(config, "client-key", tls.client_key, b"PRIVATE KEY-----")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise TemporalTLSError(
                f"temporal.tls: the client key {key_path} does not go with the client "
                f"certificate {cert_path}{_where(config)} ({exc.reason or exc}); use the "
                f"client.pem and client.key of one directory {MAKE_CERTS} made") from None
    return TLSConfig(
        server_root_ca_cert=ca,
        client_cert=cert,
        client_private_key=key,
        domain=tls.server_name,
    )


def data_converter(config: LockmasterConfig) -> DataConverter:
    """The pydantic data converter, encrypting payloads when `codec.key-file` is set (the key
    file is read and checked now: TemporalConfigError says what is wrong)."""
    if config.codec is None:
        return pydantic_data_converter
    from lockmaster.temporal.codec import EncryptionCodec, KeyFileError, load_keys, with_codec

    try:
        keys = load_keys(config.resolve(config.codec.key_file))
    except KeyFileError as exc:
        raise TemporalConfigError(f"codec.key-file{_where(config)}: {exc}") from None
    return with_codec(pydantic_data_converter,
                      EncryptionCodec(keys, encrypt=config.codec.encrypt))


async def connect(config: LockmasterConfig, *, address: str | None = None) -> Client:
    api_key = None
    if config.temporal.api_key_file:
        api_key = config.resolve(config.temporal.api_key_file).read_text().strip()
    return await Client.connect(
        address or config.temporal.address,
        namespace=config.temporal.namespace,
        data_converter=data_converter(config),
        tls=tls_config(config),
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
