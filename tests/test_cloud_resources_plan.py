"""The declarative resources planner (lockmaster/clouds/resources.py, images.py): pure rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lockmaster.clouds.images import CHECKSUM_PROPERTY, IMAGE_PROPERTY, ImageRecord, ObservedImage
from lockmaster.clouds.resource_record import record_step
from lockmaster.clouds.resources import (
    CreateKeypair,
    CreateSecurityGroup,
    DeleteImage,
    DeleteKeypair,
    DeleteSecurityGroup,
    Desired,
    Observed,
    ObservedKeypair,
    ObservedRule,
    ObservedSecurityGroup,
    Plan,
    ResourceRecord,
    ResourceSpec,
    Rule,
    SecurityGroupRecord,
    StepResult,
    SwitchKeypair,
    UpdateRules,
    UploadImage,
    key_name_for,
    keypair_cloud_name,
    plan,
)

TAG = "lockmaster:acme.r1"
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA a@x"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB b@x"
SSH = Rule(protocol="tcp", port_min=22, port_max=22, remote_ip_prefix="0.0.0.0/0")
HTTP = Rule(protocol="tcp", port_min=80, port_max=80, remote_ip_prefix="0.0.0.0/0")
EGRESS = [Rule(direction="egress", ethertype="IPv4"), Rule(direction="egress", ethertype="IPv6")]


def spec(**parts: object) -> ResourceSpec:
    return ResourceSpec.model_validate({"owner": "acme.r1", **parts})


def kp_spec(name: str = "nodes") -> dict[str, str]:
    return {"name": name, "public_key_file": f"/keys/{name}.pub"}


def img_spec(name: str = "debian-12") -> dict[str, str]:
    return {"name": name, "file": f"/images/{name}.qcow2"}


def image(
    id: str, name: str = "debian-12", checksum: str = "c1", day: int = 1, tagged: bool = True
) -> ObservedImage:
    return ObservedImage(
        id=id,
        name=name,
        tags=[TAG] if tagged else [],
        properties={IMAGE_PROPERTY: name, CHECKSUM_PROPERTY: checksum} if tagged else {},
        created_at=f"2026-12-{day:02d}T00:00:00Z",
    )


def recorded(*images: ObservedImage) -> dict[str, ImageRecord]:
    return {
        i.id: ImageRecord(
            id=i.id, name=i.name, checksum=i.properties[CHECKSUM_PROPERTY], created_at=i.created_at
        )
        for i in images
    }


def kinds(result: Plan) -> list[str]:
    return [s.action for s in result.steps]


def apply_all(result: Plan, ids: dict[str, str] | None = None) -> ResourceRecord:
    """Fold every step of a plan into its record, as the workflow will (fake resource ids)."""
    record = result.record
    for n, step in enumerate(result.steps):
        rid = (ids or {}).get(getattr(step, "name", ""), f"id-{n}")
        created = "2026-12-09T00:00:00Z" if isinstance(step, UploadImage) else None
        record = record_step(record, StepResult(step=step, resource_id=rid, created_at=created))
    return record


# --- spec validation -------------------------------------------------------------------------


def test_spec_rejects_duplicate_names_bad_ports_and_images_without_one_source() -> None:
    with pytest.raises(ValidationError, match="named twice"):
        spec(keypairs=[kp_spec(), kp_spec()])
    with pytest.raises(ValidationError, match="port_min 90 > port_max 80"):
        Rule(protocol="tcp", port_min=90, port_max=80)
    with pytest.raises(ValidationError, match="both port_min and port_max"):
        Rule(protocol="tcp", port_min=90)
    with pytest.raises(ValidationError, match="exactly one of file or url"):
        spec(images=[{"name": "x"}])
    with pytest.raises(ValidationError, match="exactly one of file or url"):
        spec(images=[{"name": "x", "file": "/a", "url": "http://b"}])
    with pytest.raises(ValidationError, match="owner"):
        ResourceSpec.model_validate({"owner": "bad/owner"})


def test_plan_refuses_unresolved_references() -> None:
    with pytest.raises(ValueError, match="no resolved key or checksum for nodes, debian-12"):
        plan(
            spec(keypairs=[kp_spec()], images=[img_spec()]), Desired(), Observed(), ResourceRecord()
        )


# --- keypairs and rotation -------------------------------------------------------------------


def test_keypair_is_created_once_then_nothing_to_do() -> None:
    s = spec(keypairs=[kp_spec()])
    desired = Desired(public_keys={"nodes": KEY_A})
    first = plan(s, desired, Observed(), ResourceRecord())
    [step] = first.steps
    assert isinstance(step, CreateKeypair)
    assert (
        step.cloud_name == keypair_cloud_name("nodes", KEY_A) != keypair_cloud_name("nodes", KEY_B)
    )
    record = apply_all(first)
    observed = Observed(keypairs=[ObservedKeypair(name=step.cloud_name, public_key=KEY_A)])
    again = plan(s, desired, observed, record)
    assert again.steps == [] and again.drift == []
    assert key_name_for(record, "nodes") == step.cloud_name


def test_key_rotation_adds_new_switches_then_deletes_old() -> None:
    s = spec(keypairs=[kp_spec()])
    old, new = keypair_cloud_name("nodes", KEY_A), keypair_cloud_name("nodes", KEY_B)
    record = apply_all(plan(s, Desired(public_keys={"nodes": KEY_A}), Observed(), ResourceRecord()))
    desired = Desired(public_keys={"nodes": KEY_B})
    cloud = [ObservedKeypair(name=old, public_key=KEY_A)]

    add = plan(s, desired, Observed(keypairs=cloud), record)
    assert [(s.action, getattr(s, "cloud_name", "")) for s in add.steps] == [
        ("create-keypair", new)
    ]
    record = apply_all(add)
    assert record.keypairs["nodes"].phase == "switching"
    assert key_name_for(record, "nodes") == old  # pools keep the old key until the switch
    cloud.append(ObservedKeypair(name=new, public_key=KEY_B))

    switch = plan(s, desired, Observed(keypairs=cloud), record)
    [step] = switch.steps
    assert isinstance(step, SwitchKeypair) and (step.from_name, step.to_name) == (old, new)
    # Re-planned before the switch is done: still the switch, never a delete of the old key.
    assert plan(s, desired, Observed(keypairs=cloud), record).steps == [step]
    record = apply_all(switch)
    assert key_name_for(record, "nodes") == new
    assert record.keypairs["nodes"].phase == "deleting-old"

    delete = plan(s, desired, Observed(keypairs=cloud), record)
    [step] = delete.steps
    assert isinstance(step, DeleteKeypair) and step.cloud_name == old and step.public_key == KEY_A
    record = apply_all(delete)
    assert record.keypairs["nodes"].phase == "active"
    final = plan(s, desired, Observed(keypairs=[cloud[1]]), record)
    assert final.steps == [] and final.drift == []


def test_rotation_whose_old_key_is_already_gone_completes() -> None:
    s = spec(keypairs=[kp_spec()])
    old, new = keypair_cloud_name("nodes", KEY_A), keypair_cloud_name("nodes", KEY_B)
    both = Observed(
        keypairs=[
            ObservedKeypair(name=old, public_key=KEY_A),
            ObservedKeypair(name=new, public_key=KEY_B),
        ]
    )
    record = apply_all(plan(s, Desired(public_keys={"nodes": KEY_A}), Observed(), ResourceRecord()))
    desired = Desired(public_keys={"nodes": KEY_B})
    record = apply_all(plan(s, desired, Observed(keypairs=both.keypairs[:1]), record))
    record = apply_all(plan(s, desired, both, record))  # the switch
    result = plan(s, desired, Observed(keypairs=both.keypairs[1:]), record)
    assert result.steps == []
    assert result.record.keypairs["nodes"].phase == "active"


def test_rotation_never_switches_to_a_key_the_cloud_lost() -> None:
    s = spec(keypairs=[kp_spec()])
    old, new = keypair_cloud_name("nodes", KEY_A), keypair_cloud_name("nodes", KEY_B)
    only_old = Observed(keypairs=[ObservedKeypair(name=old, public_key=KEY_A)])
    record = apply_all(plan(s, Desired(public_keys={"nodes": KEY_A}), Observed(), ResourceRecord()))
    desired = Desired(public_keys={"nodes": KEY_B})
    record = apply_all(plan(s, desired, only_old, record))
    assert record.keypairs["nodes"].phase == "switching"
    result = plan(s, desired, only_old, record)  # the new key vanished before the switch
    assert [(x.action, getattr(x, "cloud_name", "")) for x in result.steps] == [
        ("create-keypair", new)
    ]
    assert [d.id for d in result.drift] == [new]
    assert apply_all(result).keypairs["nodes"].phase == "switching"


def test_keypair_removed_from_spec_is_deleted_unless_changed_outside() -> None:
    record = apply_all(
        plan(
            spec(keypairs=[kp_spec()]),
            Desired(public_keys={"nodes": KEY_A}),
            Observed(),
            ResourceRecord(),
        )
    )
    name = keypair_cloud_name("nodes", KEY_A)
    ours = Observed(keypairs=[ObservedKeypair(name=name, public_key=KEY_A)])
    result = plan(spec(), Desired(), ours, record)
    [step] = result.steps
    assert isinstance(step, DeleteKeypair) and step.cloud_name == name
    assert apply_all(result).keypairs == {}
    # Someone replaced the key under our name: not ours any more, reported, kept.
    theirs = Observed(keypairs=[ObservedKeypair(name=name, public_key=KEY_B)])
    result = plan(spec(), Desired(), theirs, record)
    assert result.steps == []
    assert [(d.kind, d.id) for d in result.drift] == [("keypair", name)]


def test_unrecorded_keypairs_are_never_deleted() -> None:
    observed = Observed(keypairs=[ObservedKeypair(name="nodes-deadbeef", public_key=KEY_A)])
    assert plan(spec(), Desired(), observed, ResourceRecord()).steps == []


def test_recorded_keypair_deleted_outside_is_drift_and_recreated() -> None:
    s = spec(keypairs=[kp_spec()])
    desired = Desired(public_keys={"nodes": KEY_A})
    record = apply_all(plan(s, desired, Observed(), ResourceRecord()))
    result = plan(s, desired, Observed(), record)
    assert [d.what for d in result.drift] == ["deleted outside lockmaster"]
    assert kinds(result) == ["create-keypair"]


# --- security groups -------------------------------------------------------------------------


def group(id: str, name: str, rules: list[Rule], tagged: bool = True) -> ObservedSecurityGroup:
    return ObservedSecurityGroup(
        id=id,
        name=name,
        tags=[TAG] if tagged else [],
        rules=[ObservedRule(id=f"{id}-r{n}", rule=r) for n, r in enumerate(rules)],
    )


def test_security_group_created_with_rules_and_default_egress() -> None:
    result = plan(
        spec(security_groups=[{"name": "nodes", "rules": [SSH.model_dump()]}]),
        Desired(),
        Observed(),
        ResourceRecord(),
    )
    [step] = result.steps
    assert isinstance(step, CreateSecurityGroup)
    assert set(step.rules) == {SSH, *EGRESS}
    no_egress = plan(
        spec(security_groups=[{"name": "n", "rules": [SSH.model_dump()], "default_egress": False}]),
        Desired(),
        Observed(),
        ResourceRecord(),
    )
    assert no_egress.steps[0].rules == [SSH]  # type: ignore[union-attr]


def test_rule_added_and_removed_when_the_spec_changes_without_drift() -> None:
    record = ResourceRecord(
        security_groups={"nodes": SecurityGroupRecord(id="g1", rules=[SSH, *EGRESS])}
    )
    observed = Observed(security_groups=[group("g1", "nodes", [SSH, *EGRESS])])
    result = plan(
        spec(security_groups=[{"name": "nodes", "rules": [HTTP.model_dump()]}]),
        Desired(),
        observed,
        record,
    )
    assert result.drift == []
    [step] = result.steps
    assert isinstance(step, UpdateRules)
    assert step.add == [HTTP] and step.remove == ["g1-r0"]
    assert set(apply_all(result).security_groups["nodes"].rules) == {HTTP, *EGRESS}


def test_rule_added_outside_is_drift_and_removed() -> None:
    record = ResourceRecord(
        security_groups={"nodes": SecurityGroupRecord(id="g1", rules=[SSH, *EGRESS])}
    )
    observed = Observed(security_groups=[group("g1", "nodes", [SSH, *EGRESS, HTTP])])
    result = plan(
        spec(security_groups=[{"name": "nodes", "rules": [SSH.model_dump()]}]),
        Desired(),
        observed,
        record,
    )
    [drift] = result.drift
    assert drift.id == "g1" and "1 added, 0 removed" in drift.what
    [step] = result.steps
    assert isinstance(step, UpdateRules) and step.add == [] and step.remove == ["g1-r3"]


def test_security_group_removed_from_spec_is_deleted_only_if_still_tagged() -> None:
    record = ResourceRecord(security_groups={"old": SecurityGroupRecord(id="g1", rules=EGRESS)})
    result = plan(spec(), Desired(), Observed(security_groups=[group("g1", "old", EGRESS)]), record)
    assert [(s.action, s.group_id) for s in result.steps] == [("delete-security-group", "g1")]  # type: ignore[union-attr]
    assert apply_all(result).security_groups == {}
    untagged = Observed(security_groups=[group("g1", "old", EGRESS, tagged=False)])
    assert plan(spec(), Desired(), untagged, record).steps == []


def test_untagged_groups_are_never_touched_even_with_a_spec_name() -> None:
    observed = Observed(
        security_groups=[
            group("x", "nodes", [HTTP], tagged=False),
            group("y", "default", [], tagged=False),
        ]
    )
    result = plan(spec(security_groups=[{"name": "nodes"}]), Desired(), observed, ResourceRecord())
    assert kinds(result) == ["create-security-group"]  # a new one of ours beside theirs
    assert plan(spec(), Desired(), observed, ResourceRecord()).steps == []


def test_recorded_group_whose_tag_was_removed_is_drift_left_alone_and_replaced() -> None:
    record = ResourceRecord(security_groups={"nodes": SecurityGroupRecord(id="g1", rules=EGRESS)})
    observed = Observed(security_groups=[group("g1", "nodes", [HTTP], tagged=False)])
    result = plan(spec(security_groups=[{"name": "nodes"}]), Desired(), observed, record)
    assert [d.what for d in result.drift] == ["our tag removed outside"]
    [step] = result.steps  # nothing on g1 (no rule update, no delete): a new group of ours
    assert isinstance(step, CreateSecurityGroup)
    assert result.record.security_groups == {}
    assert apply_all(result, {"nodes": "g2"}).security_groups["nodes"].id == "g2"


def test_tagged_unrecorded_group_is_swept_after_two_sightings() -> None:
    observed = Observed(security_groups=[group("leak", "gone", EGRESS)])
    first = plan(spec(), Desired(), observed, ResourceRecord())
    assert first.steps == [] and first.record.sightings == {"sg:leak": 1}
    second = plan(spec(), Desired(), observed, first.record)
    assert [(s.action, s.group_id) for s in second.steps] == [("delete-security-group", "leak")]  # type: ignore[union-attr]
    # Gone before the second look: forgotten, nothing deleted.
    assert plan(spec(), Desired(), Observed(), first.record).record.sightings == {}


def test_tagged_unrecorded_group_with_a_spec_name_is_adopted_not_swept() -> None:
    observed = Observed(security_groups=[group("g9", "nodes", EGRESS)])
    s = spec(security_groups=[{"name": "nodes"}])
    r1 = plan(s, Desired(), observed, ResourceRecord())
    r2 = plan(s, Desired(), observed, r1.record)
    assert kinds(r1) == kinds(r2) == ["create-security-group"]
    assert r2.record.sightings == {}


# --- images ----------------------------------------------------------------------------------


def test_image_uploaded_when_no_image_of_ours_has_the_checksum() -> None:
    s = spec(images=[img_spec()])
    theirs = image("t", tagged=False, checksum="c2")  # untagged, same name: not ours
    result = plan(
        s, Desired(image_checksums={"debian-12": "c2"}), Observed(images=[theirs]), ResourceRecord()
    )
    [step] = result.steps
    assert isinstance(step, UploadImage) and step.checksum == "c2"
    record = apply_all(result, {"debian-12": "new"})
    assert record.images["new"].checksum == "c2"


def test_retention_keeps_the_newest_two_and_deletes_older_ones_of_ours() -> None:
    imgs = [
        image("a", checksum="c1", day=1),
        image("b", checksum="c2", day=2),
        image("c", checksum="c3", day=3),
        image("d", checksum="c4", day=4),
    ]
    other = image("u", day=0, tagged=False)
    result = plan(
        spec(images=[img_spec()]),
        Desired(image_checksums={"debian-12": "c4"}),
        Observed(images=[*imgs, other]),
        ResourceRecord(images=recorded(*imgs)),
    )
    assert sorted((s.action, s.image_id) for s in result.steps) == [  # type: ignore[union-attr]
        ("delete-image", "a"),
        ("delete-image", "b"),
    ]
    assert set(apply_all(result).images) == {"c", "d"}


def test_upload_then_next_plan_retires_the_third() -> None:
    s = spec(images=[img_spec()])
    imgs = [image("a", checksum="c1", day=1), image("b", checksum="c2", day=2)]
    record = ResourceRecord(images=recorded(*imgs))
    desired = Desired(image_checksums={"debian-12": "c3"})
    first = plan(s, desired, Observed(images=imgs), record)
    assert kinds(first) == ["upload-image"]  # nothing deleted before the new one exists
    record = apply_all(first, {"debian-12": "c"})
    new = image("c", checksum="c3", day=9)
    second = plan(s, desired, Observed(images=[*imgs, new]), record)
    assert [(s.action, s.image_id) for s in second.steps] == [("delete-image", "a")]  # type: ignore[union-attr]


def test_image_removed_from_spec_deletes_all_of_ours_of_that_name() -> None:
    imgs = [image("a", name="centos", day=1), image("b", name="centos", day=2)]
    result = plan(spec(), Desired(), Observed(images=imgs), ResourceRecord(images=recorded(*imgs)))
    assert sorted(s.image_id for s in result.steps) == ["a", "b"]  # type: ignore[union-attr]
    assert all(isinstance(s, DeleteImage) for s in result.steps)


def test_tagged_unrecorded_image_is_swept_after_two_sightings_untagged_never() -> None:
    leak = image("leak", name="old", checksum="x")
    untagged = image("mine-not", name="old", tagged=False)
    observed = Observed(images=[leak, untagged])
    first = plan(spec(), Desired(), observed, ResourceRecord())
    assert first.steps == [] and first.record.sightings == {"image:leak": 1}
    second = plan(spec(), Desired(), observed, first.record)
    assert [(s.action, s.image_id) for s in second.steps] == [("delete-image", "leak")]  # type: ignore[union-attr]
    third = plan(spec(), Desired(), Observed(images=[untagged]), apply_all(second))
    assert third.steps == [] and third.record.sightings == {}


def test_tagged_unrecorded_image_with_the_wanted_checksum_is_adopted() -> None:
    s = spec(images=[img_spec()])
    done = image("done", checksum="c5", day=5)  # upload finished, the record update was lost
    desired = Desired(image_checksums={"debian-12": "c5"})
    r1 = plan(s, desired, Observed(images=[done]), ResourceRecord())
    r2 = plan(s, desired, Observed(images=[done]), r1.record)
    assert kinds(r1) == kinds(r2) == ["upload-image"]  # the activity finds it; never swept
    assert r2.record.sightings == {}


def test_recorded_image_deleted_outside_is_drift_and_forgotten() -> None:
    a = image("a", checksum="c1")
    result = plan(
        spec(images=[img_spec()]),
        Desired(image_checksums={"debian-12": "c1"}),
        Observed(),
        ResourceRecord(images=recorded(a)),
    )
    assert [(d.kind, d.id, d.what) for d in result.drift] == [
        ("image", "a", "deleted outside lockmaster")
    ]
    assert result.record.images == {}
    assert kinds(result) == ["upload-image"]


def test_plan_is_pure_input_record_unchanged() -> None:
    record = ResourceRecord(sightings={"sg:x": 1})
    plan(spec(), Desired(), Observed(security_groups=[group("x", "g", [])]), record)
    assert record.sightings == {"sg:x": 1}
    assert isinstance(record.security_groups, dict) and record.security_groups == {}
    assert DeleteSecurityGroup  # imported for the discriminated union round trip below
    p = plan(spec(), Desired(), Observed(security_groups=[group("x", "g", [])]), record)
    assert Plan.model_validate_json(p.model_dump_json()) == p


def test_removed_and_already_gone_is_forgotten_not_kept_forever() -> None:
    s = spec(keypairs=[kp_spec()], security_groups=[{"name": "g"}])
    record = apply_all(plan(s, Desired(public_keys={"nodes": KEY_A}), Observed(), ResourceRecord()))
    assert set(record.keypairs) == {"nodes"} and set(record.security_groups) == {"g"}
    result = plan(spec(), Desired(), Observed(), record)
    assert result.steps == [] and result.drift == []
    assert result.record == ResourceRecord()


def test_group_removed_from_spec_whose_tag_was_removed_is_drift_and_forgotten() -> None:
    record = ResourceRecord(security_groups={"old": SecurityGroupRecord(id="g1", rules=EGRESS)})
    untagged = Observed(security_groups=[group("g1", "old", EGRESS, tagged=False)])
    result = plan(spec(), Desired(), untagged, record)
    assert result.steps == []
    assert [(d.id, d.what) for d in result.drift] == [("g1", "our tag removed outside")]
    assert result.record.security_groups == {}


def test_keypair_removed_mid_rotation_deletes_both_and_a_failed_second_delete_is_retried() -> None:
    s = spec(keypairs=[kp_spec()])
    old, new = keypair_cloud_name("nodes", KEY_A), keypair_cloud_name("nodes", KEY_B)
    record = apply_all(plan(s, Desired(public_keys={"nodes": KEY_A}), Observed(), ResourceRecord()))
    only_old = Observed(keypairs=[ObservedKeypair(name=old, public_key=KEY_A)])
    record = apply_all(plan(s, Desired(public_keys={"nodes": KEY_B}), only_old, record))
    both = Observed(keypairs=[*only_old.keypairs, ObservedKeypair(name=new, public_key=KEY_B)])
    result = plan(spec(), Desired(), both, record)
    assert sorted(x.cloud_name for x in result.steps) == sorted([old, new])  # type: ignore[union-attr]
    first = result.steps[0]
    # Only the first delete went through; the second failed.
    record = record_step(result.record, StepResult(step=first))
    left = next(k for k in both.keypairs if k.name != first.cloud_name)  # type: ignore[union-attr]
    again = plan(spec(), Desired(), Observed(keypairs=[left]), record)
    assert [x.cloud_name for x in again.steps] == [left.name]  # type: ignore[union-attr]
    assert apply_all(again) == ResourceRecord()


def test_every_step_kind_round_trips_through_json_as_temporal_carries_it() -> None:
    from lockmaster.activities.cloud_resources import ApplyRequest, CloudRef

    s = spec(
        keypairs=[kp_spec()],
        security_groups=[{"name": "g", "rules": [SSH.model_dump()]}],
        images=[img_spec()],
    )
    steps = plan(
        s,
        Desired(public_keys={"nodes": KEY_A}, image_checksums={"debian-12": "c"}),
        Observed(),
        ResourceRecord(),
    ).steps
    steps += [
        SwitchKeypair(spec_name="n", from_name="a", to_name="b"),
        DeleteKeypair(spec_name="n", cloud_name="a", public_key=KEY_A, reason="r"),
        UpdateRules(name="g", group_id="i", add=[SSH], remove=["x"], rules=[SSH]),
        DeleteSecurityGroup(name="g", group_id="i", reason="r"),
        DeleteImage(name="d", image_id="i", reason="r"),
    ]
    assert len({x.action for x in steps}) == 8
    for step in steps:
        request = ApplyRequest(cloud=CloudRef(cloud="c"), owner="o", step=step)
        back = ApplyRequest.model_validate_json(request.model_dump_json())
        assert back == request and type(back.step) is type(step)


def test_spec_reads_as_lockmaster_yaml_kebab_case_and_refuses_unknown_keys() -> None:
    import yaml

    text = """
owner: examplecloud.RegionOne
keypairs: [{name: nodes, public-key-file: /keys/nodes.pub}]
security-groups:
  - {name: nodes, default-egress: false,
     rules: [{protocol: tcp, port-min: 22, port-max: 22, remote-ip-prefix: 0.0.0.0/0}]}
images: [{name: debian-12, file: /img/d.qcow2, disk-format: raw}]
"""
    parsed = ResourceSpec.model_validate(yaml.safe_load(text))
    assert parsed.security_groups[0].desired_rules() == frozenset({SSH})
    assert parsed.images[0].disk_format == "raw"
    with pytest.raises(ValidationError, match="security-group"):
        ResourceSpec.model_validate({"owner": "o", "security-group": []})  # a typo: refused
    with pytest.raises(ValidationError, match="disk-format"):
        ResourceSpec.model_validate(
            {"owner": "o", "images": [{"name": "x", "file": "/a", "disk-format": "zip"}]}
        )


def test_remote_group_rules_name_a_spec_group_and_wait_for_it() -> None:
    with pytest.raises(ValidationError, match="remote_group 'nope' is not a security group"):
        spec(security_groups=[{"name": "a", "rules": [{"remote_group": "nope"}]}])
    with pytest.raises(ValidationError, match="not both"):
        Rule(remote_group="a", remote_ip_prefix="10.0.0.0/8")
    from_b = Rule(protocol="tcp", port_min=80, port_max=80, remote_group="b")
    own = Rule(remote_group="b")  # members of b reach each other
    s = spec(
        security_groups=[
            {"name": "a", "rules": [from_b.model_dump()]},
            {"name": "b", "rules": [own.model_dump()]},
        ]
    )
    first = plan(s, Desired(), Observed(), ResourceRecord())
    creates = {x.name: set(x.rules) for x in first.steps}  # type: ignore[union-attr]
    assert creates == {"a": set(EGRESS), "b": {own, *EGRESS}}  # a's rule waits for b
    record = apply_all(first, {"a": "ga", "b": "gb"})
    observed = Observed(
        security_groups=[group("ga", "a", EGRESS), group("gb", "b", [own, *EGRESS])]
    )
    second = plan(s, Desired(), observed, record)
    assert second.drift == []
    [step] = second.steps
    assert isinstance(step, UpdateRules) and step.add == [from_b] and step.remove == []
    record = apply_all(second)
    observed.security_groups[0] = group("ga", "a", [*EGRESS, from_b])
    third = plan(s, Desired(), observed, record)
    assert third.steps == [] and third.drift == []
