"""Declarative cloud resources: the spec, what the cloud shows, what lockmaster made -> a plan.

Pure: no I/O. The activities (lockmaster/activities/cloud_resources.py) observe the cloud and
apply one step at a time; the caller keeps the `ResourceRecord` (in workflow state) and folds each
step's result into it with `record_step` (resource_record.py).

What is "ours" (the only things a plan ever deletes or changes):
- security groups and images: tagged `lockmaster:<owner>` AND known to the record. A tagged one
  the record does not know (a create that crashed before it was recorded) is swept only after two
  sightings in two plans, so a create still in flight elsewhere is not deleted under it.
- keypairs: Nova keypairs carry no tags, so only the record makes a keypair ours, and only while
  its public key is still the one we uploaded (otherwise it is drift, left alone).
Untagged resources are never touched, whatever their name.

Images are versioned (a new build of `debian-12` is a new Glance image): retention keeps the
newest two of each name and deletes older ones of ours (see images.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lockmaster.clouds.images import ImageRecord, ImageSpec, ObservedImage, plan_images
from lockmaster.config.base import ConfigModel

TAG_PREFIX = "lockmaster:"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


def owner_tag(owner: str) -> str:
    return f"{TAG_PREFIX}{owner}"


# --- spec ----------------------------------------------------------------------------------------


class Rule(ConfigModel):
    """One security group rule, as Neutron has it (rules cannot be edited, only added/removed)."""

    model_config = ConfigDict(frozen=True)
    direction: Literal["ingress", "egress"] = "ingress"
    ethertype: Literal["IPv4", "IPv6"] = "IPv4"
    protocol: str | None = None  # tcp, udp, icmp, ... ; None: any
    port_min: int | None = Field(default=None, ge=0, le=65535)
    port_max: int | None = Field(default=None, ge=0, le=65535)
    remote_ip_prefix: str | None = None
    # Traffic from members of a group: a security group of this spec, by name (its own name
    # for "from each other"). Observed rules naming a group that is not ours read "id:<uuid>".
    remote_group: str | None = None

    @model_validator(mode="after")
    def _ports(self) -> Rule:
        if self.remote_group is not None and self.remote_ip_prefix is not None:
            raise ValueError("give remote_ip_prefix or remote_group, not both")
        if (self.port_min is None) != (self.port_max is None):
            raise ValueError("give both port_min and port_max, or neither")
        if self.port_min is not None and self.port_max is not None:
            if self.port_min > self.port_max:
                raise ValueError(f"port_min {self.port_min} > port_max {self.port_max}")
        return self

    def key(self) -> tuple[str, ...]:
        return tuple(str(v) for v in self.model_dump().values())


# Neutron gives every new group these two; the spec keeps them unless told otherwise, so a spec
# that names only ingress rules does not cut the nodes' outbound traffic.
DEFAULT_EGRESS = (
    Rule(direction="egress", ethertype="IPv4"),
    Rule(direction="egress", ethertype="IPv6"),
)


class KeypairSpec(ConfigModel):
    name: str = Field(pattern=NAME_PATTERN)
    public_key_file: Path  # read by the activity; public keys are not secrets


class SecurityGroupSpec(ConfigModel):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    rules: list[Rule] = []
    default_egress: bool = True

    def desired_rules(self) -> frozenset[Rule]:
        extra = DEFAULT_EGRESS if self.default_egress else ()
        return frozenset([*self.rules, *extra])


class ResourceSpec(ConfigModel):
    """What one cloud region should have. `owner` names lockmaster's tag (`lockmaster:<owner>`).

    A config model (kebab-case keys, unknown keys refused), so it can sit in lockmaster.yaml:

        owner: examplecloud.RegionOne
        keypairs: [{name: nodes, public-key-file: /etc/lockmaster/keys/nodes.pub}]
        security-groups:
          - name: nodes
            rules: [{protocol: tcp, port-min: 22, port-max: 22, remote-ip-prefix: 0.0.0.0/0}]
        images: [{name: debian-12, file: /srv/images/debian-12.qcow2, disk-format: qcow2}]
    """

    owner: str = Field(pattern=NAME_PATTERN)
    keypairs: list[KeypairSpec] = []
    security_groups: list[SecurityGroupSpec] = []
    images: list[ImageSpec] = []

    @field_validator("keypairs", "security_groups", "images")
    @classmethod
    def _unique(cls, items: list[BaseModel]) -> list[BaseModel]:
        seen: set[str] = set()
        for item in items:
            name = str(item.name)
            if name in seen:
                raise ValueError(f"{name!r} is named twice; names must be unique")
            seen.add(name)
        return items

    @model_validator(mode="after")
    def _remote_groups(self) -> ResourceSpec:
        names = {g.name for g in self.security_groups}
        for group in self.security_groups:
            for rule in group.rules:
                if rule.remote_group is not None and rule.remote_group not in names:
                    raise ValueError(
                        f"security group {group.name!r}: a rule's remote_group "
                        f"{rule.remote_group!r} is not a security group of this spec "
                        f"(it has: {', '.join(sorted(names))})"
                    )
        return self


class Desired(BaseModel):
    """The spec's file references resolved by an activity: public keys, image checksums."""

    public_keys: dict[str, str] = {}  # keypair spec name -> public key text
    image_checksums: dict[str, str] = {}  # image spec name -> sha256 of the file / URL content


# --- observed ------------------------------------------------------------------------------------


class ObservedKeypair(BaseModel):
    name: str
    public_key: str


class ObservedRule(BaseModel):
    id: str
    rule: Rule


class ObservedSecurityGroup(BaseModel):
    id: str
    name: str
    tags: list[str] = []
    rules: list[ObservedRule] = []


class Observed(BaseModel):
    keypairs: list[ObservedKeypair] = []
    security_groups: list[ObservedSecurityGroup] = []
    images: list[ObservedImage] = []


# --- record --------------------------------------------------------------------------------------

KeyPhase = Literal["active", "switching", "deleting-old"]


class KeypairRecord(BaseModel):
    """A spec keypair's cloud keypairs. Rotation: active -(new key created)-> switching -(pool's
    key_name switched)-> deleting-old -(old deleted)-> active."""

    cloud_name: str  # the keypair pools use now
    public_key: str
    phase: KeyPhase = "active"
    next_name: str | None = None  # switching: the new keypair, created, not used yet
    next_public_key: str | None = None
    old_name: str | None = None  # deleting-old: the previous keypair, no longer used
    old_public_key: str | None = None


class SecurityGroupRecord(BaseModel):
    id: str
    rules: list[Rule]  # as last applied


class ResourceRecord(BaseModel):
    keypairs: dict[str, KeypairRecord] = {}
    security_groups: dict[str, SecurityGroupRecord] = {}  # spec name -> record
    images: dict[str, ImageRecord] = {}  # image id -> record
    sightings: dict[str, int] = {}  # "<kind>:<id>" of tagged, unrecorded resources -> plans seen


# --- steps and plan ------------------------------------------------------------------------------


class CreateKeypair(BaseModel):
    action: Literal["create-keypair"] = "create-keypair"
    spec_name: str
    cloud_name: str
    public_key: str


class SwitchKeypair(BaseModel):
    """Not a cloud call: the pools using `spec_name` must launch with `to_name` from now on.
    The caller applies it (the pool configuration) and then records it."""

    action: Literal["switch-keypair"] = "switch-keypair"
    spec_name: str
    from_name: str
    to_name: str


class DeleteKeypair(BaseModel):
    action: Literal["delete-keypair"] = "delete-keypair"
    spec_name: str
    cloud_name: str
    public_key: str  # delete only if the cloud's key is still this one
    reason: str


class CreateSecurityGroup(BaseModel):
    action: Literal["create-security-group"] = "create-security-group"
    name: str
    description: str
    rules: list[Rule]


class UpdateRules(BaseModel):
    action: Literal["update-rules"] = "update-rules"
    name: str
    group_id: str
    add: list[Rule]
    remove: list[str]  # rule ids
    rules: list[Rule]  # the group's rules once applied


class DeleteSecurityGroup(BaseModel):
    action: Literal["delete-security-group"] = "delete-security-group"
    name: str
    group_id: str
    reason: str


class UploadImage(BaseModel):
    action: Literal["upload-image"] = "upload-image"
    name: str
    checksum: str
    spec: ImageSpec


class DeleteImage(BaseModel):
    action: Literal["delete-image"] = "delete-image"
    name: str
    image_id: str
    reason: str


Step = Annotated[
    CreateKeypair
    | SwitchKeypair
    | DeleteKeypair
    | CreateSecurityGroup
    | UpdateRules
    | DeleteSecurityGroup
    | UploadImage
    | DeleteImage,
    Field(discriminator="action"),
]


class Drift(BaseModel):
    """A resource of ours changed outside lockmaster: reported, as data."""

    kind: Literal["keypair", "security-group", "image"]
    name: str
    id: str
    what: str


class Plan(BaseModel):
    steps: list[Step] = []
    drift: list[Drift] = []
    record: ResourceRecord  # the record after this observation (sightings, vanished forgotten)


class StepResult(BaseModel):
    """What an applied step made: the new resource's id (group, image), and its creation time."""

    step: Step
    resource_id: str | None = None
    created_at: str | None = None  # images: Glance's created_at (ISO 8601)
    detail: str = ""  # what the activity found (adopted, already gone, refused: not ours)


def key_fingerprint(public_key: str) -> str:
    """A short stable id of a public key's type and body (the comment is ignored)."""
    fields = public_key.split()
    body = " ".join(fields[:2]) if len(fields) >= 2 else public_key.strip()
    return hashlib.sha256(body.encode()).hexdigest()[:8]


def same_key(a: str, b: str) -> bool:
    return key_fingerprint(a) == key_fingerprint(b)


def keypair_cloud_name(spec_name: str, public_key: str) -> str:
    """Old and new keys coexist during a rotation, so the cloud name carries the key's id."""
    return f"{spec_name}-{key_fingerprint(public_key)}"


def key_name_for(record: ResourceRecord, spec_name: str) -> str | None:
    """The keypair name a pool should launch with now."""
    entry = record.keypairs.get(spec_name)
    return entry.cloud_name if entry else None


# --- planning ------------------------------------------------------------------------------------


def plan(spec: ResourceSpec, desired: Desired, observed: Observed, record: ResourceRecord) -> Plan:
    missing = [k.name for k in spec.keypairs if k.name not in desired.public_keys]
    missing += [i.name for i in spec.images if i.name not in desired.image_checksums]
    if missing:
        raise ValueError(f"no resolved key or checksum for {', '.join(missing)}")
    out = Plan(record=record.model_copy(deep=True))
    _plan_keypairs(spec, desired, observed, out)
    _plan_security_groups(spec, observed, out)
    tag = owner_tag(spec.owner)
    steps, drift, images, sightings = plan_images(
        spec.images,
        desired.image_checksums,
        observed.images,
        out.record.images,
        tag,
        {k: v for k, v in out.record.sightings.items() if k.startswith("image:")},
    )
    out.steps += steps
    out.drift += [Drift(kind="image", name=n, id=i, what=w) for n, i, w in drift]
    out.record.images = images
    out.record.sightings = {
        **{k: v for k, v in out.record.sightings.items() if not k.startswith("image:")},
        **sightings,
    }
    return out


def _plan_keypairs(spec: ResourceSpec, desired: Desired, observed: Observed, out: Plan) -> None:
    cloud = {k.name: k for k in observed.keypairs}
    wanted = {k.name for k in spec.keypairs}
    for item in spec.keypairs:
        key = desired.public_keys[item.name]
        entry = out.record.keypairs.get(item.name)
        if entry is None:
            out.steps.append(
                CreateKeypair(
                    spec_name=item.name,
                    cloud_name=keypair_cloud_name(item.name, key),
                    public_key=key,
                )
            )
            continue
        present = cloud.get(entry.cloud_name)
        if present is None:
            out.drift.append(_key_drift(item.name, entry.cloud_name, "deleted outside lockmaster"))
            out.steps.append(
                CreateKeypair(
                    spec_name=item.name, cloud_name=entry.cloud_name, public_key=entry.public_key
                )
            )
        elif not same_key(present.public_key, entry.public_key):
            out.drift.append(_key_drift(item.name, entry.cloud_name, "public key changed outside"))
        if entry.phase == "active" and not same_key(entry.public_key, key):
            # Rotation, step 1: add the new key beside the old one.
            new_name = keypair_cloud_name(item.name, key)
            out.steps.append(
                CreateKeypair(spec_name=item.name, cloud_name=new_name, public_key=key)
            )
        elif entry.phase == "switching":
            assert entry.next_name is not None and entry.next_public_key is not None
            if entry.next_name not in cloud:  # never switch pools to a key the cloud lacks
                out.drift.append(
                    _key_drift(item.name, entry.next_name, "deleted outside lockmaster")
                )
                out.steps.append(
                    CreateKeypair(
                        spec_name=item.name,
                        cloud_name=entry.next_name,
                        public_key=entry.next_public_key,
                    )
                )
                continue
            out.steps.append(
                SwitchKeypair(
                    spec_name=item.name, from_name=entry.cloud_name, to_name=entry.next_name
                )
            )
        elif entry.phase == "deleting-old" and entry.old_name is not None:
            old = cloud.get(entry.old_name)
            if old is None:  # already gone (deleted, then the record update was lost)
                entry = out.record.keypairs[item.name]
                entry.phase, entry.old_name, entry.old_public_key = "active", None, None
            else:
                out.steps.append(
                    DeleteKeypair(
                        spec_name=item.name,
                        cloud_name=entry.old_name,
                        public_key=entry.old_public_key or "",
                        reason="rotated out",
                    )
                )
    for name, entry in list(out.record.keypairs.items()):
        if name in wanted:
            continue
        if not any(cloud_name in cloud for cloud_name, _ in names_of(entry)):
            del out.record.keypairs[name]  # removed from the spec and already gone: forgotten
            continue
        for cloud_name, public_key in names_of(entry):
            present = cloud.get(cloud_name)
            if present is None:
                continue
            if same_key(present.public_key, public_key):
                out.steps.append(
                    DeleteKeypair(
                        spec_name=name,
                        cloud_name=cloud_name,
                        public_key=public_key,
                        reason="no longer in the spec",
                    )
                )
            else:
                out.drift.append(_key_drift(name, cloud_name, "public key changed outside; kept"))


def names_of(entry: KeypairRecord) -> list[tuple[str, str]]:
    names = [(entry.cloud_name, entry.public_key)]
    if entry.next_name and entry.next_public_key:
        names.append((entry.next_name, entry.next_public_key))
    if entry.old_name and entry.old_public_key:
        names.append((entry.old_name, entry.old_public_key))
    return names


def _key_drift(name: str, cloud_name: str, what: str) -> Drift:
    return Drift(kind="keypair", name=name, id=cloud_name, what=what)


def _plan_security_groups(spec: ResourceSpec, observed: Observed, out: Plan) -> None:
    tag = owner_tag(spec.owner)
    by_id = {g.id: g for g in observed.security_groups}
    known_ids = {r.id for r in out.record.security_groups.values()}
    wanted = {g.name for g in spec.security_groups}
    for item in spec.security_groups:
        entry = out.record.security_groups.get(item.name)
        group = by_id.get(entry.id) if entry else None
        if entry is not None and (group is None or tag not in group.tags):
            gone = "deleted outside lockmaster" if group is None else "our tag removed outside"
            out.drift.append(Drift(kind="security-group", name=item.name, id=entry.id, what=gone))
            # Forgotten either way: an untagged group is not ours (never touched again), and
            # the spec gets a new one of ours, as for any group the record does not hold.
            del out.record.security_groups[item.name]
            group = None
        if group is None:
            out.steps.append(
                CreateSecurityGroup(
                    name=item.name,
                    description=item.description,
                    rules=_sorted(_ready(item, out.record)),
                )
            )
            continue
        assert entry is not None
        have = {r.rule for r in group.rules}
        if have != set(entry.rules):
            added = len(have - set(entry.rules))
            removed = len(set(entry.rules) - have)
            out.drift.append(
                Drift(
                    kind="security-group",
                    name=item.name,
                    id=group.id,
                    what=f"rules changed outside lockmaster: {added} added, {removed} removed",
                )
            )
        want = _ready(item, out.record)
        add = _sorted(want - have)
        remove = sorted(r.id for r in group.rules if r.rule not in item.desired_rules())
        if add or remove:
            out.steps.append(
                UpdateRules(
                    name=item.name,
                    group_id=group.id,
                    add=add,
                    remove=remove,
                    rules=_sorted(want | (have & item.desired_rules())),
                )
            )
    for name, entry in list(out.record.security_groups.items()):
        if name in wanted:
            continue
        group = by_id.get(entry.id)
        if group is not None and tag in group.tags:
            out.steps.append(
                DeleteSecurityGroup(name=name, group_id=entry.id, reason="no longer in the spec")
            )
            continue
        if group is not None:  # our tag removed outside: no longer ours, never touched
            out.drift.append(
                Drift(kind="security-group", name=name, id=entry.id, what="our tag removed outside")
            )
        del out.record.security_groups[name]  # gone or not ours: nothing left to delete
    # Tagged ours, but no record knows it (a create that crashed before being recorded).
    sightings = {k: v for k, v in out.record.sightings.items() if not k.startswith("sg:")}
    for group in observed.security_groups:
        if tag not in group.tags or group.id in known_ids:
            continue
        if group.name in wanted and out.record.security_groups.get(group.name) is None:
            continue  # the create step adopts it (the activity finds it by tag and name)
        seen = out.record.sightings.get(f"sg:{group.id}", 0) + 1
        if seen >= 2:
            out.steps.append(
                DeleteSecurityGroup(
                    name=group.name,
                    group_id=group.id,
                    reason=f"tagged ours, unrecorded, seen {seen}x",
                )
            )
        sightings[f"sg:{group.id}"] = seen
    out.record.sightings = sightings


def _ready(item: SecurityGroupSpec, record: ResourceRecord) -> frozenset[Rule]:
    """The rules that can be made now: one naming another group waits until that group is
    recorded (made in an earlier round), and is added by the round after."""
    return frozenset(
        r
        for r in item.desired_rules()
        if r.remote_group in (None, item.name) or r.remote_group in record.security_groups
    )


def _sorted(rules: frozenset[Rule] | set[Rule]) -> list[Rule]:
    return sorted(rules, key=Rule.key)
