"""Preflight of a donated cloud region, as pure decisions (issue 17, phase 1).

The onboarding activity gathers `CloudFacts` from the cloud (activities/onboarding.py); `evaluate`
compares them with the cloud's spec (config/clouds.py) and returns a `PreflightReport`: one check
per requirement, each ok or failed with what is wrong and how to fix it. Nothing here does I/O,
so every failure is tested without a cloud (tests/test_cloud_preflight.py).
"""

from __future__ import annotations

from pydantic import BaseModel

from lockmaster.config.clouds import CloudConfig, CloudLabel

# Catalog types Keystone may list a service under (old and new names).
SERVICE_TYPES: dict[str, tuple[str, ...]] = {
    "compute": ("compute",),
    "image": ("image",),
    "network": ("network",),
    "volume": ("block-storage", "volumev3", "volumev2", "volume"),
}
ADMIN_ROLES = frozenset({"admin"})


class TlsFacts(BaseModel):
    url: str
    scheme: str  # "https" or "http"
    reachable: bool
    error: str | None = None  # the TLS or connection error, as the client said it


class FlavorFacts(BaseModel):
    name: str
    vcpus: int
    ram: int  # MiB
    disk: int  # GiB


class QuotaFacts(BaseModel):
    """Limits minus what is used; None: unlimited (or the API did not say)."""

    instances: int | None = None
    cores: int | None = None
    ram: int | None = None  # MiB
    ports: int | None = None
    floating_ips: int | None = None


class UserFacts(BaseModel):
    role: str  # "zuul" or "ci": which of seed 004's projects
    username: str
    project: str
    authenticated: bool
    error: str | None = None  # why authentication (or a later look-up) failed
    roles: list[str] = []  # role names on its project
    # service type -> regions with an endpoint of the configured interface
    catalog: dict[str, list[str]] = {}
    flavors: list[FlavorFacts] | None = None  # None: could not be listed
    quota: QuotaFacts | None = None
    disk_formats: list[str] | None = None  # what Glance's image schema allows


class CloudFacts(BaseModel):
    keystone: TlsFacts
    users: list[UserFacts]


class Check(BaseModel):
    name: str  # e.g. "catalog/zuul", "flavor/ubuntu-noble"
    ok: bool
    message: str
    fix: str = ""  # set when failed


class PreflightReport(BaseModel):
    cloud: str
    region: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def summary(self) -> str:
        bad = self.failed()
        if not bad:
            return f"preflight passed: {len(self.checks)} checks ok"
        names = ", ".join(c.name for c in bad)
        return f"preflight failed: {len(bad)} of {len(self.checks)} checks ({names})"


def evaluate(spec: CloudConfig, region: str, facts: CloudFacts) -> PreflightReport:
    checks = [_keystone(spec, facts.keystone)]
    for user in facts.users:
        checks.extend(_user(spec, region, user))
    return PreflightReport(cloud=spec.name, region=region, checks=checks)


def _ok(name: str, message: str) -> Check:
    return Check(name=name, ok=True, message=message)


def _bad(name: str, message: str, fix: str) -> Check:
    return Check(name=name, ok=False, message=message, fix=fix)


def _keystone(spec: CloudConfig, tls: TlsFacts) -> Check:
    name = "keystone"
    if tls.scheme != "https" and not spec.insecure_for_tests:
        return _bad(
            name,
            f"Keystone at {tls.url} is not reached over https",
            "give an https auth-url (seed 004 requires https to Keystone)",
        )
    if not tls.reachable:
        if tls.scheme == "https":
            fix = (
                "if Keystone's certificate is self-signed, set ca-file to its CA bundle; "
                "otherwise fix the certificate chain (it must name the host)"
            )
        else:
            fix = "check auth-url and that Keystone is up"
        return _bad(name, f"Keystone at {tls.url} not reachable: {tls.error}", fix)
    how = "https, chain verified" if tls.scheme == "https" else "http (insecure-for-tests)"
    return _ok(name, f"Keystone at {tls.url} answers over {how}")


def _user(spec: CloudConfig, region: str, user: UserFacts) -> list[Check]:
    who = f"user {user.username!r} (project {user.project!r})"
    if not user.authenticated:
        return [
            _bad(
                f"auth/{user.role}",
                f"{who} cannot authenticate: {user.error}",
                f"check users.{user.role} (username, project, domains) and its password "
                "file or variable; the donor makes the user, or a later phase does with "
                "admin credentials",
            )
        ]
    checks = [_ok(f"auth/{user.role}", f"{who} authenticates")]
    checks.append(_admin(user, who))
    catalog, region_ok = _catalog(spec, region, user)
    checks.extend(catalog)
    if not region_ok:
        return checks  # the services of this region cannot be asked
    if user.error:
        checks.append(
            _bad(
                f"services/{user.role}",
                f"{who}: {user.error}",
                "check the services of this region answer for this user",
            )
        )
    if user.role == "zuul":
        checks.extend(_flavors(spec, user))
        checks.extend(_quota(spec, user))
        checks.append(_disk_format(spec, user))
    return checks


def _admin(user: UserFacts, who: str) -> Check:
    name = f"not-admin/{user.role}"
    admin = sorted(ADMIN_ROLES.intersection(r.lower() for r in user.roles))
    if admin:
        return _bad(
            name,
            f"{who} has the admin role on its project",
            "give lockmaster a user with the member role only (seed 004: the provided "
            "users should not have admin credentials); admin goes in `admin:` if at all",
        )
    return _ok(name, f"{who} is not an admin (roles: {', '.join(sorted(user.roles)) or 'none'})")


def _catalog(spec: CloudConfig, region: str, user: UserFacts) -> tuple[list[Check], bool]:
    wanted = ["compute", "image", "network"]
    if user.role == "ci" and spec.mirror.volume:
        wanted.append("volume")  # the region mirror's Cinder volume lives in the ci project
    regions = {r for types in user.catalog.values() for r in types}
    checks: list[Check] = []
    if region not in regions:
        near = sorted(r for r in regions if r.lower() == region.lower())
        hint = (
            f"the catalog has {near[0]!r}: use that exact name"
            if near
            else (f"the catalog's regions are {sorted(regions) or 'none'}")
        )
        checks.append(
            _bad(
                f"region/{user.role}",
                f"region {region!r} is not in the catalog of {user.username!r}",
                hint,
            )
        )
        return checks, False
    checks.append(_ok(f"region/{user.role}", f"region {region!r} is in the catalog"))
    missing = []
    for service in wanted:
        types = SERVICE_TYPES[service]
        if not any(region in user.catalog.get(t, []) for t in types):
            missing.append(service)
    if missing:
        checks.append(
            _bad(
                f"catalog/{user.role}",
                f"the catalog of {user.username!r} has no {', '.join(missing)} endpoint "
                f"({spec.interface}) in region {region!r}",
                "ask the donor to register the service endpoint in this region"
                + ("; or set mirror.volume: false" if "volume" in missing else ""),
            )
        )
    else:
        checks.append(_ok(f"catalog/{user.role}", f"catalog has {', '.join(wanted)}"))
    return checks, True


def _meets(flavor: FlavorFacts, ram: int, vcpus: int, disk: int) -> bool:
    return flavor.ram >= ram and flavor.vcpus >= vcpus and flavor.disk >= disk


def _flavor_text(flavor: FlavorFacts) -> str:
    return f"{flavor.name} ({flavor.vcpus} vCPU, {flavor.ram} MiB, {flavor.disk} GiB)"


def chosen_flavor(spec_label: CloudLabel, flavors: list[FlavorFacts]) -> FlavorFacts | None:
    """The named flavor, or the smallest one meeting the label's needs."""
    if spec_label.flavor:
        return next((f for f in flavors if f.name == spec_label.flavor), None)
    fitting = [
        f
        for f in flavors
        if _meets(f, spec_label.min_ram, spec_label.min_vcpus, spec_label.min_disk)
    ]
    return min(fitting, key=lambda f: (f.vcpus, f.ram, f.disk, f.name), default=None)


def _flavors(spec: CloudConfig, user: UserFacts) -> list[Check]:
    if user.flavors is None:
        return [_bad("flavors", "flavors could not be listed", "see services/zuul")]
    checks = []
    needs_of = "{} vCPU, {} MiB RAM, {} GiB disk"
    for label in spec.labels:
        name = f"flavor/{label.name}"
        needs = needs_of.format(label.min_vcpus, label.min_ram, label.min_disk)
        flavor = chosen_flavor(label, user.flavors)
        if flavor is None and label.flavor:
            known = ", ".join(sorted(f.name for f in user.flavors)) or "none"
            checks.append(
                _bad(
                    name,
                    f"flavor {label.flavor!r} does not exist (there are: {known})",
                    "name an existing flavor, or ask the donor to create it",
                )
            )
        elif flavor is None:
            checks.append(
                _bad(
                    name,
                    f"no flavor has {needs}",
                    "ask the donor for a flavor that size (seed 004), or lower "
                    "min-ram/min-vcpus/min-disk of the label",
                )
            )
        elif not _meets(flavor, label.min_ram, label.min_vcpus, label.min_disk):
            checks.append(
                _bad(
                    name,
                    f"flavor {_flavor_text(flavor)} is smaller than the label needs ({needs})",
                    "name a bigger flavor, or ask the donor for one",
                )
            )
        else:
            checks.append(_ok(name, f"flavor {_flavor_text(flavor)} meets {needs}"))
    return checks


def _quota(spec: CloudConfig, user: UserFacts) -> list[Check]:
    if user.quota is None or user.flavors is None:
        return [_bad("quota", "quotas could not be read", "see services/zuul")]
    flavors = [chosen_flavor(label, user.flavors) for label in spec.labels]
    sized = [f for f in flavors if f is not None]
    if not sized:
        return []  # the flavor checks already failed: nothing to multiply
    # max-servers of the largest flavor: any mix of labels fits in that.
    n = spec.max_servers
    need = {
        "instances": n,
        "cores": n * max(f.vcpus for f in sized),
        "ram": n * max(f.ram for f in sized),
        "ports": n,
    }
    if spec.floating_ips:
        need["floating_ips"] = n
    checks = []
    for resource, amount in need.items():
        free = getattr(user.quota, resource)
        name = f"quota/{resource}"
        if free is not None and free < amount:
            checks.append(
                _bad(
                    name,
                    f"{resource}: {free} free, max-servers {n} needs {amount}",
                    f"ask the donor to raise the {resource} quota of project "
                    f"{user.project!r} to {amount}, or lower max-servers",
                )
            )
        else:
            checks.append(
                _ok(
                    name,
                    f"{resource}: {'unlimited' if free is None else free} free, {amount} needed",
                )
            )
    return checks


def _disk_format(spec: CloudConfig, user: UserFacts) -> Check:
    name = "image/disk-format"
    fmt = spec.image_disk_format
    if user.disk_formats is None:
        return _bad(name, "Glance's image schema could not be read", "see services/zuul")
    if fmt not in user.disk_formats:
        return _bad(
            name,
            f"Glance does not accept disk format {fmt!r} "
            f"(it accepts {', '.join(user.disk_formats) or 'none'})",
            "set image-disk-format to one it accepts (and build images in it)",
        )
    return _ok(name, f"Glance accepts disk format {fmt!r}")


def dns_checks(name: str | None, zone: str, problems: list[str],
               existing: dict[str, list[str]]) -> list[Check]:
    """The mirror's DNS name (activities/dns.py check_mirror_dns) as preflight checks: each
    problem already says what is wrong and how to fix it."""
    if problems:
        return [_bad("dns", problem, "see the message (dns: in lockmaster.yaml, or the "
                                     "PowerDNS server)") for problem in problems]
    there = "; ".join(f"{kind} {', '.join(values)}" for kind, values in sorted(existing.items()))
    note = f" (records already there, to be replaced: {there})" if there else ""
    return [_ok("dns", f"mirror name {name} can be made in zone {zone}{note}")]
