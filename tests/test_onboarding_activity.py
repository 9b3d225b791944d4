"""Onboarding's preflight activity against a real Keystone (projects, users, roles, catalog) and
the fake Nova/Glance/Neutron, reached by openstacksdk as any cloud."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lockmaster.activities.onboarding import OnboardingActivities, PreflightRequest
from lockmaster.clouds.preflight import PreflightReport
from tests.fixtures.keystone import REGION
from tests.fixtures.onboarding import BIG_FLAVOR, OnboardingCloud


@pytest.fixture
def cloud(onboarding_cloud: OnboardingCloud) -> OnboardingCloud:
    onboarding_cloud.reset()
    return onboarding_cloud


async def preflight(cloud: OnboardingCloud, tmp_path: Path, region: str = REGION,
                    **overrides: object) -> PreflightReport:
    spec = cloud.spec(tmp_path / "secrets", **overrides)
    return await OnboardingActivities().preflight(PreflightRequest(cloud=spec, region=region))


def failed(report: PreflightReport) -> dict[str, str]:
    return {c.name: c.message for c in report.failed()}


async def test_preflight_passes_on_a_good_donor(cloud: OnboardingCloud, tmp_path: Path) -> None:
    report = await preflight(cloud, tmp_path)
    assert report.ok, failed(report)
    messages = {c.name: c.message for c in report.checks}
    assert BIG_FLAVOR in messages["flavor/ubuntu-noble"]
    assert messages["quota/cores"] == "cores: 80 free, 80 needed"
    assert messages["quota/ports"] == "ports: 500 free, 10 needed"
    assert "member" in messages["not-admin/zuul"]
    assert "compute, image, network, volume" in messages["catalog/ci"]


async def test_preflight_reports_what_the_cloud_lacks(
    cloud: OnboardingCloud, tmp_path: Path
) -> None:
    cloud.fake.network_quota["floatingip"] = 4
    cloud.fake.disk_formats = ["raw", "iso"]
    cloud.fake.set_limits(cores=40)
    report = await preflight(cloud, tmp_path)
    bad = failed(report)
    assert set(bad) == {"quota/floating_ips", "quota/cores", "image/disk-format"}, bad
    assert bad["quota/floating_ips"] == "floating_ips: 4 free, max-servers 10 needs 10"
    assert "(it accepts raw, iso)" in bad["image/disk-format"]


async def test_preflight_region_name_must_be_exact(cloud: OnboardingCloud, tmp_path: Path) -> None:
    report = await preflight(cloud, tmp_path, region="regionone", regions=["regionone"])
    assert set(failed(report)) == {"region/zuul", "region/ci"}
    assert any("'RegionOne': use that exact name" in c.fix for c in report.failed())


async def test_preflight_admin_user_fails(cloud: OnboardingCloud, tmp_path: Path) -> None:
    admin = cloud.keystone.admin()
    try:
        user = admin.identity.find_user("ci", ignore_missing=False)
        project = admin.identity.find_project("ci", ignore_missing=False)
        role = admin.identity.find_role("admin", ignore_missing=False)
        admin.identity.assign_project_role_to_user(project, user, role)
        report = await preflight(cloud, tmp_path)
    finally:
        admin.identity.unassign_project_role_from_user(project, user, role)
        admin.close()
    assert set(failed(report)) == {"not-admin/ci"}


async def test_wrong_password_fails_auth_without_showing_it(
    cloud: OnboardingCloud, tmp_path: Path
) -> None:
    spec = cloud.spec(tmp_path / "secrets")
    assert spec.users.zuul.password_file is not None
    spec.users.zuul.password_file.write_text("not-the-password\n")
    report = await OnboardingActivities().preflight(PreflightRequest(cloud=spec, region=REGION))
    assert set(failed(report)) == {"auth/zuul"}
    assert "not-the-password" not in report.model_dump_json()
    assert cloud.ci.password not in report.model_dump_json()


async def test_missing_password_file_is_named(cloud: OnboardingCloud, tmp_path: Path) -> None:
    spec = cloud.spec(tmp_path / "secrets")
    assert spec.users.ci.password_file is not None
    spec.users.ci.password_file.unlink()
    report = await OnboardingActivities().preflight(PreflightRequest(cloud=spec, region=REGION))
    bad = failed(report)
    assert set(bad) == {"auth/ci"}
    assert f"password file {spec.users.ci.password_file}: No such file" in bad["auth/ci"]


def test_plain_http_without_the_test_flag_is_refused_as_input(
    cloud: OnboardingCloud, tmp_path: Path
) -> None:
    # The spec is validated again as the activity's input: http cannot slip through.
    spec = cloud.spec(tmp_path / "secrets").model_copy(update={"insecure_for_tests": False})
    with pytest.raises(ValidationError, match="plain http"):
        PreflightRequest(cloud=spec, region=REGION)
