"""Mutual TLS to Temporal: deploy/make-certs.sh, the `temporal.tls` section, and a real handshake.

Temporal's dev server takes no TLS options (`temporal server start-dev --help`), so the
handshake is made with a TLS-terminating proxy in front of the session's dev server: it
requires a client certificate of the CA (as the compose file's server does with
TEMPORAL_TLS_REQUIRE_CLIENT_AUTH) and presents the server certificate make-certs.sh made.
lockmaster's client (temporalio's Rust core) and the temporal CLI (Go, as in the admin-tools
and UI images) both connect through it; what the Temporal server itself does with the files is
not tried here (no Docker engine)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from lockmaster.config.loader import ConfigError, load_config, parse_config
from lockmaster.temporal.client import TemporalTLSError, connect, tls_config
from lockmaster.temporal.devserver import temporal_binary

ROOT = Path(__file__).resolve().parent.parent
MAKE_CERTS = ROOT / "deploy" / "make-certs.sh"
CLIENTS = ["temporal-admin", "temporal-ui", "lockmaster-setup", "orchestrator", "executor",
           "launcher", "publisher", "gerrit-listener", "operator"]

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="openssl is not installed (apt-get install openssl)")


def make_certs(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(MAKE_CERTS), str(out)], check=True, capture_output=True,
                          text=True, env={**os.environ, **env})


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    out = tmp_path_factory.mktemp("deploy") / "secrets" / "tls"
    make_certs(out)
    return out


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def usages(c: x509.Certificate) -> set[str]:
    eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    names = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
             ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}
    return {names.get(oid, oid.dotted_string) for oid in eku}


def openssl_verify(ca: Path, leaf: Path, purpose: str) -> str:
    result = subprocess.run(["openssl", "verify", "-CAfile", str(ca), "-purpose", purpose,
                             str(leaf)], capture_output=True, text=True)
    return result.stdout.strip() + result.stderr.strip()


# --- deploy/make-certs.sh -------------------------------------------------------------------


def test_make_certs_makes_a_ca_a_server_and_a_client_certificate_per_service(certs: Path) -> None:
    ca = certs / "ca" / "ca.pem"
    ca_cert = cert(ca)
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = certs / "temporal" / "server.pem"
    assert openssl_verify(ca, server, "sslserver") == f"{server}: OK"
    sans = cert(server).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"temporal", "localhost"}
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # Internode TLS: the server's certificate is the client's too, between its own services.
    assert usages(cert(server)) == {"serverAuth", "clientAuth"}
    assert sorted(p.name for p in (certs / "temporal").iterdir()) == \
        ["ca.pem", "server.key", "server.pem"]
    for client in CLIENTS:
        leaf = certs / client / "client.pem"
        assert openssl_verify(ca, leaf, "sslclient") == f"{leaf}: OK", client
        # A client certificate cannot serve: a stolen one does not impersonate the server.
        assert "OK" not in openssl_verify(ca, leaf, "sslserver").split(":")[-1]
        assert usages(cert(leaf)) == {"clientAuth"}
        assert cert(leaf).subject.rfc4514_string() == f"CN={client},O=lockmaster"
        assert sorted(p.name for p in (certs / client).iterdir()) == \
            ["ca.pem", "client.key", "client.pem"]
        assert (certs / client / "ca.pem").read_bytes() == ca.read_bytes()
    # The CA's key is in a directory of its own, which no service mounts.
    assert (certs / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (certs / "ca").stat().st_mode & 0o777 == 0o700
    assert certs.parent.stat().st_mode & 0o777 == 0o700  # deploy/secrets


@needs_openssl
def test_make_certs_keeps_what_exists_and_renews_leaves_on_request(tmp_path: Path) -> None:
    out = tmp_path / "secrets" / "tls"
    make_certs(out, CLIENTS="executor", TEMPORAL_SANS="DNS:temporal.ci.example.org,IP:192.0.2.7")
    sans = cert(out / "temporal" / "server.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "temporal.ci.example.org" in sans.get_values_for_type(x509.DNSName)
    assert "192.0.2.7" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = make_certs(out, CLIENTS="executor")
    assert again.stdout == "" and before == {p: p.read_bytes() for p in before}
    make_certs(out, CLIENTS="executor", FORCE="1")
    assert (out / "ca" / "ca.key").read_bytes() == before[out / "ca" / "ca.key"]
    assert (out / "executor" / "client.pem").read_bytes() != before[out / "executor" / "client.pem"]
    assert openssl_verify(out / "ca" / "ca.pem", out / "executor" / "client.pem", "sslclient") \
        .endswith("OK")


# --- the temporal.tls section ---------------------------------------------------------------


def write_config(directory: Path, tls: str) -> Path:
    path = directory / "lockmaster.yaml"
    path.write_text(f"temporal:\n  address: 127.0.0.1:7233\n{tls}")
    return path


def tls_section(ca: str, cert_: str, key: str, server_name: str = "temporal") -> str:
    return (f"  tls:\n    ca-cert: {ca}\n    client-cert: {cert_}\n    client-key: {key}\n"
            f"    server-name: {server_name}\n")


def test_no_tls_section_is_a_plain_connection() -> None:
    assert tls_config(parse_config("temporal: {address: 127.0.0.1:7233}\n", "x.yaml")) is False


def test_tls_section_maps_to_temporalio_tls_config_relative_to_the_file(
        certs: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(certs / "executor", site / "tls")
    config = load_config(write_config(site, tls_section("tls/ca.pem", "tls/client.pem",
                                                         "tls/client.key")))
    mapped = tls_config(config)
    assert mapped == TLSConfig(
        server_root_ca_cert=(certs / "executor" / "ca.pem").read_bytes(),
        client_cert=(certs / "executor" / "client.pem").read_bytes(),
        client_private_key=(certs / "executor" / "client.key").read_bytes(),
        domain="temporal",
    )


def test_tls_needs_the_client_certificate_and_its_key_together(tmp_path: Path) -> None:
    text = "temporal:\n  tls:\n    ca-cert: ca.pem\n    client-cert: client.pem\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "lockmaster.yaml")
    [problem] = info.value.problems
    assert problem.path == "temporal.tls" and problem.line == 2
    assert "client-cert is set but client-key is not" in problem.message


def test_a_missing_file_says_which_where_and_how_to_fix(certs: Path, tmp_path: Path) -> None:
    shutil.copytree(certs / "executor", tmp_path / "tls")
    (tmp_path / "tls" / "client.key").unlink()
    path = write_config(tmp_path, tls_section("tls/ca.pem", "tls/client.pem", "tls/client.key"))
    with pytest.raises(TemporalTLSError) as info:
        tls_config(load_config(path))
    message = str(info.value)
    assert message.startswith(f"temporal.tls.client-key: {tmp_path / 'tls' / 'client.key'} "
                              "does not exist")
    assert f"(in {path})" in message and "deploy/make-certs.sh" in message
    assert isinstance(info.value, RuntimeError)  # reported as a connection failure is


def test_a_file_that_is_not_pem_or_a_key_of_another_certificate_is_refused(
        certs: Path, tmp_path: Path) -> None:
    shutil.copytree(certs / "executor", tmp_path / "tls")
    (tmp_path / "tls" / "ca.pem").write_text("not a certificate\n")
    path = write_config(tmp_path, tls_section("tls/ca.pem", "tls/client.pem", "tls/client.key"))
    with pytest.raises(TemporalTLSError, match=r"temporal.tls.ca-cert: .*ca.pem holds no PEM "
                                               r"BEGIN CERTIFICATE"):
        tls_config(load_config(path))
    shutil.copy(certs / "ca" / "ca.pem", tmp_path / "tls" / "ca.pem")
    shutil.copy(certs / "launcher" / "client.key", tmp_path / "tls" / "client.key")
    with pytest.raises(TemporalTLSError, match=r"client key .*client.key does not go with the "
                                               r"client certificate"):
        tls_config(load_config(path))
    # The key where the certificate belongs, and the other way round.
    path = write_config(tmp_path, tls_section("tls/ca.pem", "tls/client.key", "tls/client.pem"))
    with pytest.raises(TemporalTLSError, match=r"temporal.tls.client-cert: .* holds no PEM"):
        tls_config(load_config(path))


def test_the_production_example_uses_mutual_tls() -> None:
    config = load_config(ROOT / "lockmaster/config/examples/production.yaml")
    tls = config.temporal.tls
    assert tls is not None and tls.ca_cert and tls.client_cert and tls.client_key
    assert tls.server_name == "temporal"


# --- a real handshake -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def mtls_proxy(server_dir: Path, upstream: str) -> AsyncIterator[tuple[str, list[str]]]:
    """A TLS endpoint that requires a client certificate of the CA in `server_dir` and forwards
    to `upstream` (a plain Temporal frontend): its address, and the subjects it let in."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH,
                                         cafile=str(server_dir / "ca.pem"))
    context.load_cert_chain(server_dir / "server.pem", server_dir / "server.key")
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])  # gRPC's
    host, port = upstream.rsplit(":", 1)
    admitted: list[str] = []
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert") or {}
        admitted.append(",".join(f"{k}={v}" for rdn in peer.get("subject", ()) for k, v in rdn))
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        task = asyncio.ensure_future(asyncio.gather(pipe(reader, up_writer),
                                                    pipe(up_reader, writer)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}", admitted
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()


def client_config(tmp_path: Path, directory: Path, server_name: str = "temporal") -> Path:
    return write_config(tmp_path, tls_section(f"{directory}/ca.pem", f"{directory}/client.pem",
                                              f"{directory}/client.key", server_name))


async def test_lockmaster_connects_with_mutual_tls(
        certs: Path, tmp_path: Path, temporal_env: WorkflowEnvironment) -> None:
    upstream = temporal_env.client.service_client.config.target_host
    async with mtls_proxy(certs / "temporal", upstream) as (address, admitted):
        config = load_config(client_config(tmp_path, certs / "executor"))
        secure = await connect(config, address=address)
        # A real call through the handshake: the dev server's own namespace, as it answers it.
        described = await secure.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace="default"))
        assert described.namespace_info.name == "default"
        assert "commonName=executor" in admitted[-1]


async def test_without_a_certificate_of_the_ca_the_frontend_refuses(
        certs: Path, tmp_path: Path, temporal_env: WorkflowEnvironment) -> None:
    upstream = temporal_env.client.service_client.config.target_host
    other = tmp_path / "other" / "secrets" / "tls"
    make_certs(other, CLIENTS="executor")
    async with mtls_proxy(certs / "temporal", upstream) as (address, admitted):
        # No client certificate at all.
        no_cert = write_config(tmp_path, f"  tls:\n    ca-cert: {certs}/ca/ca.pem\n"
                                         "    server-name: temporal\n")
        with pytest.raises(RuntimeError, match="connect"):
            await connect(load_config(no_cert), address=address)
        # A certificate of another CA.
        (tmp_path / "mixed").mkdir()
        shutil.copy(certs / "ca" / "ca.pem", tmp_path / "mixed" / "ca.pem")
        for name in ("client.pem", "client.key"):
            shutil.copy(other / "executor" / name, tmp_path / "mixed" / name)
        with pytest.raises(RuntimeError, match="connect"):
            await connect(load_config(client_config(tmp_path, tmp_path / "mixed")),
                          address=address)
        # The server's certificate is checked too: not the name it was made for.
        with pytest.raises(RuntimeError, match="connect"):
            await connect(load_config(client_config(tmp_path, certs / "executor",
                                                    "review.example.org")), address=address)
        assert admitted == [], "nobody got through"


async def test_the_namespace_script_creates_the_namespace_over_mutual_tls(
        certs: Path, temporal_env: WorkflowEnvironment) -> None:
    """deploy/temporal/create-namespace.sh, as the temporal-namespace service runs it, with the
    temporal CLI of the tests (the admin-tools image has its own build of the same CLI)."""
    upstream = temporal_env.client.service_client.config.target_host
    namespace = f"tls-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PATH": f"{Path(temporal_binary()).parent}:{os.environ['PATH']}",
           "TEMPORAL_ADDRESS": "", "NAMESPACE": namespace,
           "TLS_DIR": str(certs / "temporal-admin"), "TLS_SERVER_NAME": "temporal"}
    async with mtls_proxy(certs / "temporal", upstream) as (address, admitted):
        env["TEMPORAL_ADDRESS"] = address
        for expected in (f"namespace {namespace} created", f"namespace {namespace} exists"):
            proc = await asyncio.create_subprocess_exec(
                "sh", str(ROOT / "deploy/temporal/create-namespace.sh"), env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            output, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, output.decode()
            assert output.decode().strip().endswith(expected)
        assert admitted and all("commonName=temporal-admin" in s for s in admitted)
    described = await temporal_env.client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace))
    assert described.namespace_info.name == namespace
