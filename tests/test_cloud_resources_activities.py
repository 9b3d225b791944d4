"""Declarative cloud resources applied through openstacksdk (unmocked) to the fake cloud, with real
Keystone: resolve -> observe -> plan -> apply each step -> record, as the workflow will."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from temporalio.exceptions import ApplicationError

from lockmaster.activities.cloud_resources import (
    ApplyRequest,
    CloudRef,
    ObserveRequest,
    ResolveRequest,
    apply_cloud_resource_step,
    observe_cloud_resources,
    resolve_cloud_resources,
)
from lockmaster.clouds.images import CHECKSUM_PROPERTY, IMAGE_PROPERTY
from lockmaster.clouds.resource_record import record_step
from lockmaster.clouds.resources import (
    CreateKeypair,
    CreateSecurityGroup,
    DeleteSecurityGroup,
    Plan,
    ResourceRecord,
    ResourceSpec,
    StepResult,
    SwitchKeypair,
    UploadImage,
    key_name_for,
    keypair_cloud_name,
    plan,
)
from tests.fakes.openstack_cloud import FakeOpenStack

if TYPE_CHECKING:
    from tests.fixtures.openstack import CloudConfig

pytest_plugins = ["tests.fixtures.openstack"]

OWNER = "fakecloud.r1"
TAG = f"lockmaster:{OWNER}"
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA a@x"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB b@x"
SSH = {"protocol": "tcp", "port_min": 22, "port_max": 22, "remote_ip_prefix": "0.0.0.0/0"}


class Reconciler:
    """What the onboarding workflow will do each round, with the record kept here."""

    def __init__(self, cloud: CloudRef) -> None:
        self.cloud = cloud
        self.record = ResourceRecord()
        self.results: list[StepResult] = []

    async def round(self, spec: ResourceSpec, switch: bool = True) -> Plan:
        desired = await resolve_cloud_resources(ResolveRequest(spec=spec))
        observed = await observe_cloud_resources(ObserveRequest(cloud=self.cloud, owner=OWNER))
        result = plan(spec, desired, observed, self.record)
        self.record = result.record
        for step in result.steps:
            if isinstance(step, SwitchKeypair):
                if not switch:
                    continue
                done = StepResult(step=step, detail="pool switched")  # the pool's side
            else:
                done = await apply_cloud_resource_step(
                    ApplyRequest(cloud=self.cloud, owner=OWNER, step=step)
                )
            self.results.append(done)
            self.record = record_step(self.record, done)
        return result


@pytest.fixture
def ref(cloud_config: CloudConfig) -> CloudRef:
    return CloudRef(
        cloud=cloud_config.cloud,
        region=cloud_config.region,
        clouds_file=str(cloud_config.clouds_file),
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "a.pub").write_text(KEY_A + "\n")
    (tmp_path / "b.pub").write_text(KEY_B + "\n")
    (tmp_path / "debian.qcow2").write_bytes(b"image build 1")
    return tmp_path


def full_spec(files: Path, key: str = "a.pub", **drop: bool) -> ResourceSpec:
    return ResourceSpec.model_validate(
        {
            "owner": OWNER,
            "keypairs": []
            if drop.get("keypairs")
            else [{"name": "nodes", "public_key_file": str(files / key)}],
            "security_groups": [] if drop.get("groups") else [{"name": "nodes", "rules": [SSH]}],
            "images": []
            if drop.get("images")
            else [{"name": "debian-12", "file": str(files / "debian.qcow2")}],
        }
    )


def ours(fake: FakeOpenStack) -> tuple[list[str], list[str], list[str]]:
    groups = sorted(g.name for g in fake.security_groups.values() if TAG in g.tags)
    images = sorted(i for i, m in fake.image_meta.items() if TAG in m.tags)
    keys = sorted(k for k in fake.keypairs if k.startswith("nodes-"))
    return keys, groups, images


async def test_apply_from_nothing_then_nothing_to_do(
    ref: CloudRef, files: Path, fake_openstack: FakeOpenStack
) -> None:
    rec = Reconciler(ref)
    first = await rec.round(full_spec(files))
    assert sorted(s.action for s in first.steps) == [
        "create-keypair",
        "create-security-group",
        "upload-image",
    ]
    keys, groups, images = ours(fake_openstack)
    assert keys == [keypair_cloud_name("nodes", KEY_A)] and groups == ["nodes"] and len(images) == 1
    assert fake_openstack.keypair_keys[keys[0]] == KEY_A
    meta = fake_openstack.image_meta[images[0]]
    assert (meta.status, meta.size, meta.disk_format) == ("active", len(b"image build 1"), "qcow2")
    assert meta.properties[IMAGE_PROPERTY] == "debian-12"
    [group] = [g for g in fake_openstack.security_groups.values() if TAG in g.tags]
    ports = sorted((r["direction"], r["port_range_min"]) for r in group.rules.values())
    assert ports == [("egress", None), ("egress", None), ("ingress", 22)]
    assert key_name_for(rec.record, "nodes") == keys[0]

    second = await rec.round(full_spec(files))
    assert second.steps == [] and second.drift == []
    assert (
        len(fake_openstack.keypair_creates),
        len(fake_openstack.group_creates),
        len(fake_openstack.image_creates),
        len(fake_openstack.rule_creates),
    ) == (1, 1, 1, 1)


async def test_retried_creates_make_nothing_twice(
    ref: CloudRef, files: Path, fake_openstack: FakeOpenStack
) -> None:
    spec = full_spec(files)
    desired = await resolve_cloud_resources(ResolveRequest(spec=spec))
    observed = await observe_cloud_resources(ObserveRequest(cloud=ref, owner=OWNER))
    steps = plan(spec, desired, observed, ResourceRecord()).steps
    firsts = [
        await apply_cloud_resource_step(ApplyRequest(cloud=ref, owner=OWNER, step=s)) for s in steps
    ]
    # The worker died before the results reached the workflow: the same steps run again.
    agains = [
        await apply_cloud_resource_step(ApplyRequest(cloud=ref, owner=OWNER, step=s)) for s in steps
    ]
    assert [a.resource_id for a in agains] == [f.resource_id for f in firsts]
    assert {a.detail for a in agains} <= {
        "already there",
        "adopted (tagged ours)",
        "adopted (uploaded before)",
    }
    assert (
        len(fake_openstack.keypair_creates),
        len(fake_openstack.group_creates),
        len(fake_openstack.image_creates),
        len(fake_openstack.rule_creates),
    ) == (1, 1, 1, 1)


async def test_removed_from_spec_is_deleted_and_nothing_else(
    ref: CloudRef, files: Path, fake_openstack: FakeOpenStack
) -> None:
    theirs_group = fake_openstack.add_security_group("nodes", tags=[])  # same name, not ours
    theirs_image = fake_openstack.add_tagged_image("debian-12", tags=["someone-else"])
    before_images = set(fake_openstack.images)
    rec = Reconciler(ref)
    await rec.round(full_spec(files))
    gone = await rec.round(full_spec(files, keypairs=True, groups=True, images=True))
    assert sorted(s.action for s in gone.steps) == [
        "delete-image",
        "delete-keypair",
        "delete-security-group",
    ]
    assert ours(fake_openstack) == ([], [], [])
    assert set(fake_openstack.images) == before_images  # seed images and theirs untouched
    assert theirs_group.id in fake_openstack.security_groups
    assert theirs_image.id in fake_openstack.images
    assert "lockmaster" in fake_openstack.keypairs  # a keypair we never made
    assert rec.record == ResourceRecord()


async def test_key_rotation_add_switch_delete(
    ref: CloudRef, files: Path, fake_openstack: FakeOpenStack
) -> None:
    old, new = keypair_cloud_name("nodes", KEY_A), keypair_cloud_name("nodes", KEY_B)
    rec = Reconciler(ref)
    await rec.round(full_spec(files))
    rotated = full_spec(files, key="b.pub")
    await rec.round(rotated, switch=False)  # add new; the pool has not switched yet
    assert {old, new} <= fake_openstack.keypairs
    assert key_name_for(rec.record, "nodes") == old
    await rec.round(rotated, switch=False)
    assert {old, new} <= fake_openstack.keypairs  # never deleted before the switch
    await rec.round(rotated)  # the switch
    assert key_name_for(rec.record, "nodes") == new
    await rec.round(rotated)  # delete old
    assert old not in fake_openstack.keypairs and new in fake_openstack.keypairs
    last = await rec.round(rotated)
    assert last.steps == [] and rec.record.keypairs["nodes"].phase == "active"


async def test_image_retention_keeps_newest_two(
    ref: CloudRef, files: Path, fake_openstack: FakeOpenStack
) -> None:
    rec = Reconciler(ref)
    for build in range(1, 5):
        (files / "debian.qcow2").write_bytes(f"image build {build}".encode())
        await rec.round(full_spec(files))
    await rec.round(full_spec(files))  # retention runs after the last upload exists
    uploaded = [
        r.resource_id for r in rec.results if isinstance(r.step, UploadImage) and r.resource_id
    ]
    assert len(uploaded) == 4
    assert ours(fake_openstack)[2] == sorted(uploaded[-2:])
    checksums = {fake_openstack.image_meta[i].properties[CHECKSUM_PROPERTY] for i in uploaded[-2:]}
    assert len(checksums) == 2


async def test_leaked_tagged_image_and_group_swept_after_two_sightings(
    ref: CloudRef, files: Path, fake_openstack: FakeOpenStack
) -> None:
    leak = fake_openstack.add_tagged_image(
        "old", tags=[TAG], properties={IMAGE_PROPERTY: "old", CHECKSUM_PROPERTY: "x"}
    )
    group = fake_openstack.add_security_group("leftover", tags=[TAG])
    other = fake_openstack.add_tagged_image("old", tags=["lockmaster:another.owner"])
    rec = Reconciler(ref)
    spec = full_spec(files, keypairs=True, groups=True, images=True)
    await rec.round(spec)
    assert leak.id in fake_openstack.images and group.id in fake_openstack.security_groups
    await rec.round(spec)
    assert leak.id not in fake_openstack.images
    assert group.id not in fake_openstack.security_groups
    assert other.id in fake_openstack.images


async def test_rule_added_outside_is_reported_and_removed(
    ref: CloudRef, files: Path, fake_openstack: FakeOpenStack
) -> None:
    rec = Reconciler(ref)
    await rec.round(full_spec(files))
    [group] = [g for g in fake_openstack.security_groups.values() if TAG in g.tags]
    with fake_openstack._lock:
        fake_openstack._add_rule(
            group,
            {
                "direction": "ingress",
                "ethertype": "IPv4",
                "protocol": "tcp",
                "port_range_min": 3306,
                "port_range_max": 3306,
                "remote_ip_prefix": "0.0.0.0/0",
            },
        )
    result = await rec.round(full_spec(files))
    assert [(d.kind, d.id) for d in result.drift] == [("security-group", group.id)]
    assert 3306 not in {r["port_range_min"] for r in group.rules.values()}
    assert (await rec.round(full_spec(files))).drift == []


async def test_deletes_refuse_what_is_not_ours(
    ref: CloudRef, fake_openstack: FakeOpenStack
) -> None:
    theirs = fake_openstack.add_security_group("nodes", tags=[])
    step = DeleteSecurityGroup(name="nodes", group_id=theirs.id, reason="test")
    done = await apply_cloud_resource_step(ApplyRequest(cloud=ref, owner=OWNER, step=step))
    assert done.detail.startswith("refused") and theirs.id in fake_openstack.security_groups
    fake_openstack.add_keypair("nodes-aaaa")
    fake_openstack.keypair_keys["nodes-aaaa"] = KEY_B
    create = CreateKeypair(spec_name="nodes", cloud_name="nodes-aaaa", public_key=KEY_A)
    with pytest.raises(ApplicationError, match="another public key"):
        await apply_cloud_resource_step(ApplyRequest(cloud=ref, owner=OWNER, step=create))
    assert fake_openstack.keypair_keys["nodes-aaaa"] == KEY_B


async def test_bad_references_are_clear_errors(tmp_path: Path) -> None:
    spec = ResourceSpec.model_validate(
        {"owner": OWNER, "keypairs": [{"name": "k", "public_key_file": str(tmp_path / "no.pub")}]}
    )
    with pytest.raises(
        ApplicationError, match=r"keypair 'k': cannot read public_key_file .*no\.pub"
    ):
        await resolve_cloud_resources(ResolveRequest(spec=spec))
    (tmp_path / "bad.pub").write_text("not a key")
    spec.keypairs[0].public_key_file = tmp_path / "bad.pub"
    with pytest.raises(ApplicationError, match="not an OpenSSH public key"):
        await resolve_cloud_resources(ResolveRequest(spec=spec))
    assert CreateSecurityGroup  # the step types the workflow will carry are importable here


@pytest.mark.parametrize("tags_on_create", [True, False])
async def test_group_is_tagged_on_create_or_right_after_on_an_older_neutron(
    ref: CloudRef, fake_openstack: FakeOpenStack, tags_on_create: bool
) -> None:
    fake_openstack.tags_on_create = tags_on_create
    step = CreateSecurityGroup(name="nodes", description="d", rules=[])
    done = await apply_cloud_resource_step(ApplyRequest(cloud=ref, owner=OWNER, step=step))
    group = fake_openstack.security_groups[str(done.resource_id)]
    assert group.tags == [TAG] and group.name == "nodes"
    # rules=[]: Neutron's default egress rules were removed to match the step exactly.
    assert group.rules == {}
    assert len(fake_openstack.group_creates) == 1
    assert {r.path for r in fake_openstack.requests if r.method == "PUT"} == (
        set() if tags_on_create else {f"/network/v2.0/security-groups/{group.id}/tags"}
    )


async def test_remote_group_rules_reach_neutron_as_group_ids(
    ref: CloudRef, files: Path, fake_openstack: FakeOpenStack
) -> None:
    spec = ResourceSpec.model_validate(
        {
            "owner": OWNER,
            "security-groups": [
                {
                    "name": "web",
                    "rules": [
                        {"protocol": "tcp", "port-min": 80, "port-max": 80, "remote-group": "nodes"}
                    ],
                },
                {"name": "nodes", "rules": [{"remote-group": "nodes"}]},
            ],
        }
    )
    rec = Reconciler(ref)
    await rec.round(spec)
    await rec.round(spec)  # web's rule waited for nodes to be recorded
    ids = {g.name: g.id for g in fake_openstack.security_groups.values() if TAG in g.tags}
    remote = {
        name: sorted(
            (r["port_range_min"], r["remote_group_id"])
            for r in fake_openstack.security_groups[gid].rules.values()
            if r["remote_group_id"]
        )
        for name, gid in ids.items()
    }
    assert remote == {"web": [(80, ids["nodes"])], "nodes": [(None, ids["nodes"])]}
    settled = await rec.round(spec)
    assert settled.steps == [] and settled.drift == []
    # A rule from a group that is not ours, added outside: drift, and removed.
    theirs = fake_openstack.add_security_group("theirs", tags=[])
    web = fake_openstack.security_groups[ids["web"]]
    with fake_openstack._lock:
        fake_openstack._add_rule(
            web, {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": theirs.id}
        )
    result = await rec.round(spec)
    assert [(d.kind, d.id) for d in result.drift] == [("security-group", ids["web"])]
    assert theirs.id not in {r["remote_group_id"] for r in web.rules.values()}


async def test_url_image_uploaded_once_per_build_and_a_bad_url_is_a_clear_error(
    ref: CloudRef, tmp_path: Path, fake_openstack: FakeOpenStack
) -> None:
    import os

    from aiohttp import web

    served = tmp_path / "served.qcow2"
    served.write_bytes(b"url build 1")

    async def serve(_: web.Request) -> web.FileResponse:
        return web.FileResponse(served)

    app = web.Application()
    app.router.add_get("/images/debian.qcow2", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        url = f"http://127.0.0.1:{port}/images/debian.qcow2"
        spec = ResourceSpec.model_validate(
            {"owner": OWNER, "images": [{"name": "debian-12", "url": url}]}
        )
        rec = Reconciler(ref)
        await rec.round(spec)
        [first] = ours(fake_openstack)[2]
        assert fake_openstack.image_meta[first].size == len(b"url build 1")
        assert (await rec.round(spec)).steps == []  # same ETag: nothing to upload
        served.write_bytes(b"url build 2, longer")
        os.utime(served, (1, 2))  # a new build: new mtime and size, so a new ETag
        await rec.round(spec)
        assert len(ours(fake_openstack)[2]) == 2
        sizes = sorted(m.size or 0 for m in fake_openstack.image_meta.values() if TAG in m.tags)
        assert sizes == [len(b"url build 1"), len(b"url build 2, longer")]
        missing = ResourceSpec.model_validate(
            {"owner": OWNER, "images": [{"name": "x", "url": url.replace("debian", "nope")}]}
        )
        with pytest.raises(ApplicationError, match=r"image 'x': .*nope\.qcow2 answered HTTP 404"):
            await resolve_cloud_resources(ResolveRequest(spec=missing))
    finally:
        await runner.cleanup()
