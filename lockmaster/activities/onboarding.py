"""Cloud onboarding's activities (orchestrator role): gather what preflight needs from a donated
cloud region with openstacksdk, and judge it (lockmaster/clouds/preflight.py).

The input names passwords by reference (a file or an environment variable of this worker); they
are read here and go nowhere else: not into the result, a log line or an error message. Every
call only reads, so a retried activity (after a worker crash) asks again and changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path
from typing import Any

import keystoneauth1.exceptions as ks_exceptions
import requests
from openstack import exceptions as sdk_exceptions
from openstack.connection import Connection
from temporalio import activity

from lockmaster.clouds.preflight import (
    CloudFacts,
    FlavorFacts,
    PreflightReport,
    QuotaFacts,
    TlsFacts,
    UserFacts,
    evaluate,
)
from lockmaster.config.clouds import CloudConfig, CloudCredential
from lockmaster.model.onboarding import PreflightRequest

HTTP_TIMEOUT = 30.0  # seconds per request to the donor's APIs


class CredentialError(Exception):
    pass


def read_password(cred: CloudCredential) -> str:
    """The password a credential refers to; the error names the reference, never a value."""
    if cred.password_env:
        value = os.environ.get(cred.password_env)
        if not value:
            raise CredentialError(f"environment variable {cred.password_env} is not set on the "
                                  "worker running onboarding activities")
        return value
    assert cred.password_file is not None  # the config model requires one of the two
    try:
        lines = Path(cred.password_file).read_text().splitlines()
    except OSError as exc:
        raise CredentialError(f"password file {cred.password_file}: {exc.strerror}") from None
    if not lines or not lines[0].strip():
        raise CredentialError(f"password file {cred.password_file} is empty")
    return lines[0].strip()


def probe_keystone(spec: CloudConfig) -> TlsFacts:
    """Keystone's identity endpoint over HTTP(S); https verifies the chain against ca-file, or
    the system's trust store."""
    scheme = spec.auth_url.split(":", 1)[0]
    verify: bool | str = str(spec.ca_file) if spec.ca_file else True
    try:
        response = requests.get(spec.auth_url, verify=verify, timeout=HTTP_TIMEOUT)
    except requests.exceptions.SSLError as exc:
        return TlsFacts(url=spec.auth_url, scheme=scheme, reachable=False,
                        error=f"TLS: {_root(exc)}")
    except requests.exceptions.RequestException as exc:
        return TlsFacts(url=spec.auth_url, scheme=scheme, reachable=False, error=_root(exc))
    if response.status_code >= 400:
        return TlsFacts(url=spec.auth_url, scheme=scheme, reachable=False,
                        error=f"HTTP {response.status_code}")
    return TlsFacts(url=spec.auth_url, scheme=scheme, reachable=True)


def _root(exc: BaseException) -> str:
    """The innermost reason (requests wraps urllib3 wraps ssl): the part an operator can act on,
    e.g. "certificate verify failed: unable to get local issuer certificate"."""
    inner: BaseException = exc
    for _ in range(8):
        nested = getattr(inner, "reason", None)
        if not isinstance(nested, BaseException):
            first = inner.args[0] if inner.args else None
            nested = first if isinstance(first, BaseException) else inner.__cause__
        if nested is None:
            break
        inner = nested
    if isinstance(inner, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {inner.verify_message}"
    return str(inner) or type(inner).__name__


def _connect(spec: CloudConfig, region: str, cred: CloudCredential, password: str) -> Connection:
    import openstack

    return openstack.connect(
        load_yaml_config=False, load_envvars=False,
        auth_url=spec.auth_url, username=cred.username, password=password,
        project_name=cred.project, user_domain_name=cred.user_domain,
        project_domain_name=cred.project_domain, region_name=region,
        interface=spec.interface, cacert=str(spec.ca_file) if spec.ca_file else None,
        api_timeout=HTTP_TIMEOUT,
    )


def gather_user(spec: CloudConfig, region: str, role: str) -> UserFacts:
    cred: CloudCredential = getattr(spec.users, role)
    base = {"role": role, "username": cred.username, "project": cred.project}
    try:
        password = read_password(cred)
    except CredentialError as exc:
        return UserFacts(**base, authenticated=False, error=str(exc))
    conn = _connect(spec, region, cred, password)
    try:
        try:
            access = conn.session.auth.get_access(conn.session)
        except (ks_exceptions.ClientException, sdk_exceptions.SDKException) as exc:
            return UserFacts(**base, authenticated=False, error=f"{type(exc).__name__}: {exc}")
        facts = UserFacts(**base, authenticated=True, roles=list(access.role_names or []),
                          catalog=_catalog(access.service_catalog.catalog, spec.interface))
        regions = {r for found in facts.catalog.values() for r in found}
        if role != "zuul" or region not in regions:
            return facts
        try:
            facts.flavors = [FlavorFacts(name=f.name, vcpus=f.vcpus, ram=f.ram, disk=f.disk or 0)
                             for f in conn.compute.flavors(details=True)]
            facts.quota = _quota(conn, access.project_id)
            schema = conn.image.get_image_schema()
            enum = (schema.properties or {}).get("disk_format", {}).get("enum") or []
            facts.disk_formats = [str(f) for f in enum if f]
        except (ks_exceptions.ClientException, sdk_exceptions.SDKException) as exc:
            facts.error = f"{type(exc).__name__}: {exc}"
        return facts
    finally:
        conn.close()


def _catalog(entries: list[dict[str, Any]], interface: str) -> dict[str, list[str]]:
    catalog: dict[str, list[str]] = {}
    for entry in entries or []:
        for endpoint in entry.get("endpoints", []):
            if endpoint.get("interface") == interface:
                region = endpoint.get("region_id") or endpoint.get("region")
                if region:
                    catalog.setdefault(str(entry.get("type")), []).append(str(region))
    return catalog


def _free(limit: int | None, used: int | None) -> int | None:
    return None if limit is None or limit < 0 else max(0, int(limit) - int(used or 0))


def _quota(conn: Connection, project_id: str) -> QuotaFacts:
    absolute = conn.compute.get_limits().absolute
    network = conn.network.get_quota(project_id, details=True)

    def neutron(entry: dict[str, int] | None) -> int | None:
        if not entry:
            return None
        return _free(entry.get("limit"), (entry.get("used") or 0) + (entry.get("reserved") or 0))

    return QuotaFacts(
        instances=_free(absolute.instances, absolute.instances_used),
        cores=_free(absolute.total_cores, absolute.total_cores_used),
        ram=_free(absolute.total_ram, absolute.total_ram_used),
        ports=neutron(network.ports),
        floating_ips=neutron(network.floating_ips),
    )


def gather(spec: CloudConfig, region: str) -> CloudFacts:
    if spec.ca_file is not None and not os.access(spec.ca_file, os.R_OK):
        # requests and keystoneauth raise a bare OSError for it: say it once, ask nothing.
        why = f"ca-file {spec.ca_file} is not readable on this worker"
        scheme = spec.auth_url.split(":", 1)[0]
        return CloudFacts(
            keystone=TlsFacts(url=spec.auth_url, scheme=scheme, reachable=False, error=why),
            users=[UserFacts(role=role, username=getattr(spec.users, role).username,
                             project=getattr(spec.users, role).project, authenticated=False,
                             error=why) for role in ("zuul", "ci")])
    return CloudFacts(keystone=probe_keystone(spec),
                      users=[gather_user(spec, region, role) for role in ("zuul", "ci")])


class OnboardingActivities:
    @activity.defn(name="onboarding_preflight")
    async def preflight(self, request: PreflightRequest) -> PreflightReport:
        """Read-only: asks the cloud, changes nothing, so retrying is always safe."""
        facts = await asyncio.to_thread(gather, request.cloud, request.region)
        return evaluate(request.cloud, request.region, facts)
