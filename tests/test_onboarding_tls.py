"""Preflight's Keystone probe over real TLS: an https server on loopback with a certificate from
a self-signed CA made here. Verified with the configured ca-file; refused without it (the system
trust store does not know the CA) and when the certificate names another host."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lockmaster.activities.onboarding import probe_keystone
from lockmaster.clouds.preflight import CloudFacts, evaluate
from lockmaster.config.clouds import CloudConfig


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_pki(directory: Path, san: x509.GeneralName) -> tuple[Path, Path, Path]:
    """(CA cert, server cert, server key) PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test CA")).issuer_name(_name("test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("keystone")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class _Version(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"version": {"id": "v3.14", "status": "stable"}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def https_server(cert: Path, key: Path) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Version)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    # The handshake happens in the request thread, not in accept(): a client that gives up
    # mid-handshake must not hold the serving loop (and shutdown) up.
    server.socket = context.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/v3"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def good(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca, cert, key = make_pki(tmp_path, x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    for url in https_server(cert, key):
        yield url, ca


@pytest.fixture
def wrong_host(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca, cert, key = make_pki(tmp_path, x509.DNSName("keystone.elsewhere.example"))
    for url in https_server(cert, key):
        yield url, ca


def spec(url: str, ca: Path | None) -> CloudConfig:
    return CloudConfig.model_validate({
        "name": "donor", "auth-url": url, "regions": ["RegionOne"], "ca-file": ca,
        "users": {"zuul": {"username": "z", "project": "z", "password-env": "Z"},
                  "ci": {"username": "c", "project": "c", "password-env": "C"}},
        "labels": [{"name": "n"}],
    })


def keystone_check(cloud: CloudConfig) -> tuple[bool, str]:
    facts = CloudFacts(keystone=probe_keystone(cloud), users=[])
    check = evaluate(cloud, "RegionOne", facts).checks[0]
    return check.ok, f"{check.message} | {check.fix}"


def test_self_signed_keystone_verified_with_the_configured_ca(good: tuple[str, Path]) -> None:
    url, ca = good
    ok, text = keystone_check(spec(url, ca))
    assert ok, text
    assert "https, chain verified" in text


def test_unknown_ca_is_refused_with_the_fix(good: tuple[str, Path]) -> None:
    url, _ = good
    ok, text = keystone_check(spec(url, None))
    assert not ok
    assert "TLS: certificate verify failed: unable to get local issuer certificate" in text
    assert "set ca-file" in text


def test_certificate_for_another_host_is_refused(wrong_host: tuple[str, Path]) -> None:
    url, ca = wrong_host
    ok, text = keystone_check(spec(url, ca))
    assert not ok
    assert "TLS: certificate verify failed: IP address mismatch" in text, text


def test_missing_ca_file_is_named_not_raised(good: tuple[str, Path], tmp_path: Path) -> None:
    from lockmaster.activities.onboarding import gather

    url, _ = good
    cloud = spec(url, tmp_path / "absent-ca.pem")
    report = evaluate(cloud, "RegionOne", gather(cloud, "RegionOne"))
    failed = {c.name: c.message for c in report.failed()}
    assert set(failed) == {"keystone", "auth/zuul", "auth/ci"}
    assert f"ca-file {tmp_path / 'absent-ca.pem'} is not readable" in failed["keystone"]
