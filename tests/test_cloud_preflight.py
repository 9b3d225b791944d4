"""Preflight's pure checks (lockmaster/clouds/preflight.py) and the `clouds:` config: one test
per failure the issue names, each starting from facts that pass."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from lockmaster.clouds.preflight import (
    CloudFacts,
    FlavorFacts,
    QuotaFacts,
    TlsFacts,
    UserFacts,
    evaluate,
)
from lockmaster.config.clouds import CloudConfig
from lockmaster.config.models import LockmasterConfig

REGION = "RegionOne"


def spec(**overrides: Any) -> CloudConfig:
    doc: dict[str, Any] = {
        "name": "donor",
        "auth-url": "https://keystone.donor.example:5000/v3",
        "regions": [REGION],
        "users": {
            "zuul": {"username": "zuul", "project": "zuul", "password-file": "/s/zuul"},
            "ci": {"username": "ci", "project": "ci", "password-env": "CI_PW"},
        },
        "labels": [{"name": "ubuntu-noble"}],
        "max-servers": 10,
    }
    doc.update(overrides)
    return CloudConfig.model_validate(doc)


def user(role: str, **overrides: Any) -> UserFacts:
    services = ["compute", "image", "network", "volumev3"]
    base: dict[str, Any] = {
        "role": role, "username": role, "project": role, "authenticated": True,
        "roles": ["member", "reader"],
        "catalog": {s: [REGION] for s in services},
        "flavors": [FlavorFacts(name="small", vcpus=2, ram=2048, disk=20),
                    FlavorFacts(name="ci.large", vcpus=8, ram=8192, disk=80)],
        "quota": QuotaFacts(instances=10, cores=80, ram=81920, ports=50, floating_ips=10),
        "disk_formats": ["qcow2", "raw"],
    }
    base.update(overrides)
    return UserFacts(**base)


def facts(zuul: dict[str, Any] | None = None, ci: dict[str, Any] | None = None,
          tls: dict[str, Any] | None = None) -> CloudFacts:
    keystone = {"url": "https://keystone.donor.example:5000/v3", "scheme": "https",
                "reachable": True, **(tls or {})}
    return CloudFacts(keystone=TlsFacts(**keystone),
                      users=[user("zuul", **(zuul or {})), user("ci", **(ci or {}))])


def failed(report: Any) -> dict[str, str]:
    return {c.name: c.message + " | fix: " + c.fix for c in report.failed()}


def test_good_cloud_passes_every_check() -> None:
    report = evaluate(spec(), REGION, facts())
    assert report.ok, failed(report)
    names = {c.name for c in report.checks}
    assert {"keystone", "region/zuul", "catalog/ci", "not-admin/zuul", "flavor/ubuntu-noble",
            "quota/cores", "quota/floating_ips", "image/disk-format"} <= names
    assert "ci.large" in next(c.message for c in report.checks if c.name == "flavor/ubuntu-noble")


def test_region_name_wrong_case_suggests_exact_name() -> None:
    report = evaluate(spec(regions=["regionone"]), "regionone", facts())
    bad = failed(report)
    assert set(bad) == {"region/zuul", "region/ci"}
    assert "'RegionOne': use that exact name" in bad["region/zuul"]


def test_missing_service_in_catalog() -> None:
    catalog = {"compute": [REGION], "network": [REGION]}
    report = evaluate(spec(), REGION, facts(zuul={"catalog": catalog}))
    bad = failed(report)
    assert list(bad) == ["catalog/zuul"]
    assert "no image endpoint" in bad["catalog/zuul"]


def test_volume_needed_only_when_the_mirror_wants_one() -> None:
    catalog = {"compute": [REGION], "image": [REGION], "network": [REGION]}
    bad = failed(evaluate(spec(), REGION, facts(ci={"catalog": catalog})))
    assert "volume" in bad["catalog/ci"]
    report = evaluate(spec(mirror={"volume": False}), REGION, facts(ci={"catalog": catalog}))
    assert report.ok, failed(report)


def test_user_is_admin() -> None:
    report = evaluate(spec(), REGION, facts(ci={"roles": ["member", "Admin"]}))
    bad = failed(report)
    assert list(bad) == ["not-admin/ci"]
    assert "admin role" in bad["not-admin/ci"]


def test_flavor_too_small() -> None:
    small = [FlavorFacts(name="ci.large", vcpus=8, ram=4096, disk=80)]
    report = evaluate(spec(labels=[{"name": "n", "flavor": "ci.large"}]), REGION,
                      facts(zuul={"flavors": small}))
    assert "smaller than the label needs" in failed(report)["flavor/n"]
    report = evaluate(spec(), REGION, facts(zuul={"flavors": small}))
    needs = "no flavor has 8 vCPU, 8192 MiB RAM, 80 GiB disk"
    assert needs in failed(report)["flavor/ubuntu-noble"]


def test_named_flavor_missing_lists_known() -> None:
    report = evaluate(spec(labels=[{"name": "n", "flavor": "nope"}]), REGION, facts())
    assert "there are: ci.large, small" in failed(report)["flavor/n"]


def test_quota_too_small() -> None:
    quota = QuotaFacts(instances=10, cores=79, ram=None, ports=50, floating_ips=3)
    report = evaluate(spec(), REGION, facts(zuul={"quota": quota}))
    bad = failed(report)
    assert set(bad) == {"quota/cores", "quota/floating_ips"}
    assert "79 free, max-servers 10 needs 80" in bad["quota/cores"]
    # without public IPs per node, floating IPs are not needed
    report = evaluate(spec(**{"floating-ips": False}), REGION, facts(zuul={"quota": quota}))
    assert set(failed(report)) == {"quota/cores"}


def test_disk_format_refused() -> None:
    report = evaluate(spec(**{"image-disk-format": "vhd"}), REGION, facts())
    bad = failed(report)
    assert list(bad) == ["image/disk-format"]
    assert "does not accept disk format 'vhd' (it accepts qcow2, raw)" in bad["image/disk-format"]


def test_tls_chain_invalid() -> None:
    tls = {"reachable": False, "error": "CERTIFICATE_VERIFY_FAILED: self-signed certificate"}
    bad = failed(evaluate(spec(), REGION, facts(tls=tls)))
    assert list(bad) == ["keystone"]
    assert "ca-file" in bad["keystone"] and "self-signed" in bad["keystone"]


def test_plain_http_fails_unless_insecure_for_tests() -> None:
    tls = {"url": "http://127.0.0.1:5000/v3", "scheme": "http"}
    assert list(failed(evaluate(spec(), REGION, facts(tls=tls)))) == ["keystone"]
    insecure = spec(**{"auth-url": "http://127.0.0.1:5000/v3", "insecure-for-tests": True})
    assert evaluate(insecure, REGION, facts(tls=tls)).ok


def test_user_cannot_authenticate_stops_its_checks() -> None:
    report = evaluate(spec(), REGION, facts(zuul={"authenticated": False, "error": "HTTP 401"}))
    assert list(failed(report)) == ["auth/zuul"]
    assert not any(c.name.startswith("quota") for c in report.checks)


@pytest.mark.parametrize(("override", "words"), [
    ({"auth-url": "http://k/v3"}, "plain http"),
    ({"users": {"zuul": {"username": "z", "project": "z"},
                "ci": {"username": "c", "project": "c", "password-env": "X"}}},
     "exactly one of password-file"),
    ({"users": {"zuul": {"username": "z", "project": "z", "password": "hunter2"},
                "ci": {"username": "c", "project": "c", "password-env": "X"}}},
     "a password never goes in lockmaster.yaml"),
    ({"image-disk-format": "qcow3"}, "is not one of"),
    ({"regions": ["a b"]}, "region 'a b'"),
    ({"name": "a/b"}, "cloud name 'a/b'"),
])
def test_config_refuses_bad_input(override: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**override)
    assert words in str(info.value)


def test_cloud_names_unique_in_lockmaster_config() -> None:
    one = spec().model_dump(by_alias=True)
    with pytest.raises(ValidationError, match="'donor' is defined twice"):
        LockmasterConfig.model_validate({"clouds": [one, one]})


def test_phases_and_details_say_what_is_not_implemented() -> None:
    from lockmaster.model.onboarding import (
        OnboardInput,
        after_preflight,
        details_markdown,
        initial_status,
    )

    status = initial_status(OnboardInput(cloud=spec(), region=REGION, requested_by="alice"))
    assert [p.state for p in status.phases[:2]] == ["pending", "not-implemented"]
    report = evaluate(spec(), REGION, facts(zuul={"roles": ["admin"]}))
    after_preflight(status, report)
    details = details_markdown(status)
    assert status.phase("preflight").state == "failed"
    assert "**mirror**: not implemented yet" in details
    assert "`not-admin/zuul`: user 'zuul' (project 'zuul') has the admin role" in details
    after_preflight(status, None, "activity timed out")
    assert status.phase("preflight").message == "preflight could not run: activity timed out"


def test_dns_problems_become_failed_checks() -> None:
    from lockmaster.clouds.preflight import dns_checks

    bad = dns_checks(None, "example.org", ["zone 'example.org' does not exist: create it"], {})
    assert [(c.name, c.ok) for c in bad] == [("dns", False)]
    good = dns_checks("mirror.r.c.example.org", "example.org", [], {"A": ["192.0.2.1"]})
    assert good[0].ok and "records already there, to be replaced: A 192.0.2.1" in good[0].message


def test_config_file_errors_say_where() -> None:
    from lockmaster.config.loader import EXAMPLES, ConfigError, parse_config

    text = (EXAMPLES / "dev.yaml").read_text() + """
clouds:
  - name: donor
    auth-url: https://k.example/v3
    regions: [RegionOne]
    users:
      zuul: {username: z, project: z, password: hunter2}
      ci: {username: c, project: c, password-env: CI_PW}
    labels: [{name: n}]
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "lockmaster.yaml")
    [problem] = info.value.problems
    assert problem.path == "clouds[0].users.zuul"
    assert problem.line == text.splitlines().index(
        "      zuul: {username: z, project: z, password: hunter2}") + 1
    assert "password-file" in problem.message and "hunter2" not in str(info.value)
