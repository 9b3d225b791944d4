"""Declarative cloud resources: resolve the spec's files, observe the cloud, apply one plan step.

The plan is made by lockmaster/clouds/resources.py (pure); these activities are its hands, each
idempotent, so a retried step never makes a second keypair, group, rule or image:
- a create looks for an existing resource of ours first (a keypair with this name and key, a
  group with this name and our tag, an active image with our tag and this checksum) and adopts it;
- a delete of something already gone succeeds; a delete of something that is no longer ours
  (tag removed, key replaced) is refused and reported in `detail`, never carried out.
Observation lists only what carries our tag (keypairs have no tags: all are listed by name).
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from pathlib import Path
from typing import Any

import httpx
from openstack import exceptions as sdk_exceptions
from openstack.connection import Connection
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from lockmaster.clouds.images import CHECKSUM_PROPERTY, IMAGE_PROPERTY, ObservedImage
from lockmaster.clouds.openstack import OpenStackCloud
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
    ResourceSpec,
    Rule,
    Step,
    StepResult,
    SwitchKeypair,
    UpdateRules,
    UploadImage,
    owner_tag,
    same_key,
)
from lockmaster.temporal.heartbeat import heartbeating

CHUNK = 1 << 20
HTTP_TIMEOUT = 60.0  # seconds without progress for a URL image's HEAD or download


class CloudRef(BaseModel):
    """Which cloud: a clouds.yaml entry (the file holds the credentials, never the history)."""

    cloud: str
    region: str | None = None
    clouds_file: str | None = None

    def client(self) -> OpenStackCloud:
        path = Path(self.clouds_file) if self.clouds_file else None
        return OpenStackCloud(self.cloud, self.region, path)


class ResolveRequest(BaseModel):
    spec: ResourceSpec


class ObserveRequest(BaseModel):
    cloud: CloudRef
    owner: str


class ApplyRequest(BaseModel):
    cloud: CloudRef
    owner: str
    step: Step


def _fail(message: str) -> ApplicationError:
    # Configuration or ownership problems: retrying cannot fix them.
    return ApplicationError(message, type="CloudResourceError", non_retryable=True)


# --- resolve ---------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _url_version(name: str, url: str) -> str:
    """A URL image's version without downloading it: its final URL, ETag, Last-Modified and
    length (a new build changes at least one). Stands where a file image has its sha256."""
    try:
        answer = httpx.head(url, follow_redirects=True, timeout=HTTP_TIMEOUT)
    except httpx.HTTPError as exc:  # unreachable now: worth retrying
        raise ApplicationError(f"image {name!r}: {url} did not answer: {exc}") from exc
    if answer.status_code >= 400:
        message = f"image {name!r}: {url} answered HTTP {answer.status_code}"
        if answer.status_code >= 500:
            raise ApplicationError(message)
        raise _fail(f"{message}; fix the url in the resources spec")
    marks = [answer.headers.get(h, "") for h in ("etag", "last-modified", "content-length")]
    if not any(marks):
        raise _fail(
            f"image {name!r}: {url} gives no ETag, Last-Modified or Content-Length, so its "
            "builds cannot be told apart; serve it with one, or use a file"
        )
    return hashlib.sha256("\n".join([str(answer.url), *marks]).encode()).hexdigest()


def _download(url: str, into: Path) -> None:
    with httpx.stream("GET", url, follow_redirects=True, timeout=HTTP_TIMEOUT) as answer:
        answer.raise_for_status()
        with into.open("wb") as handle:
            for chunk in answer.iter_bytes(CHUNK):
                handle.write(chunk)


def resolve(spec: ResourceSpec) -> Desired:
    """Read the public keys and hash the image files the spec refers to."""
    desired = Desired()
    for key in spec.keypairs:
        try:
            text = key.public_key_file.read_text().strip()
        except OSError as exc:
            raise _fail(
                f"keypair {key.name!r}: cannot read public_key_file {key.public_key_file}: "
                f"{exc.strerror}; fix the path in the resources spec"
            ) from exc
        if len(text.split()) < 2 or not text.startswith(("ssh-", "ecdsa-", "sk-")):
            raise _fail(f"keypair {key.name!r}: {key.public_key_file} is not an OpenSSH public key")
        desired.public_keys[key.name] = text
    for image in spec.images:
        if image.url is not None:
            desired.image_checksums[image.name] = _url_version(image.name, image.url)
            continue
        assert image.file is not None
        try:
            desired.image_checksums[image.name] = _sha256(image.file)
        except OSError as exc:
            raise _fail(
                f"image {image.name!r}: cannot read {image.file}: {exc.strerror}; "
                "fix the path in the resources spec"
            ) from exc
    return desired


@activity.defn(name="resolve_cloud_resources")
async def resolve_cloud_resources(request: ResolveRequest) -> Desired:
    async with heartbeating("hashing image files"):
        return await asyncio.to_thread(resolve, request.spec)


# --- observe ---------------------------------------------------------------------------------


def _rule(raw: dict[str, Any], names: dict[str, str]) -> Rule:
    """Neutron's rule as the spec writes it; `names`: our tagged groups, id -> name. A remote
    group that is not ours reads "id:<uuid>" (no spec names it: removed from our groups)."""
    remote = raw.get("remote_group_id")
    return Rule(
        direction=raw.get("direction") or "ingress",
        ethertype=raw.get("ethertype") or "IPv4",
        protocol=raw.get("protocol"),
        port_min=raw.get("port_range_min"),
        port_max=raw.get("port_range_max"),
        remote_ip_prefix=raw.get("remote_ip_prefix"),
        remote_group=(names.get(remote, f"id:{remote}") if remote else None),
    )


def _group_names(conn: Connection, tag: str) -> dict[str, str]:
    return {g.id: g.name for g in conn.network.security_groups(tags=tag) if tag in (g.tags or [])}


def _group(group: Any, names: dict[str, str]) -> ObservedSecurityGroup:
    rules = [
        ObservedRule(id=raw["id"], rule=_rule(raw, names))
        for raw in group.security_group_rules or []
    ]
    return ObservedSecurityGroup(
        id=group.id, name=group.name, tags=list(group.tags or []), rules=rules
    )


def _image(image: Any) -> ObservedImage:
    props = image.properties or {}
    return ObservedImage(
        id=image.id,
        name=image.name or "",
        tags=list(image.tags or []),
        properties={k: str(props[k]) for k in (IMAGE_PROPERTY, CHECKSUM_PROPERTY) if k in props},
        created_at=image.created_at,
        status=image.status or "",
    )


def observe(conn: Connection, owner: str) -> Observed:
    tag = owner_tag(owner)
    keypairs = [
        ObservedKeypair(name=k.name, public_key=k.public_key or "") for k in conn.compute.keypairs()
    ]
    # Filtered by tag in the cloud (less to list), and again here (the check that matters).
    tagged = [g for g in conn.network.security_groups(tags=tag) if tag in (g.tags or [])]
    names = {g.id: g.name for g in tagged}
    groups = [_group(g, names) for g in tagged]
    images = [_image(i) for i in conn.image.images(tag=tag) if tag in (i.tags or [])]
    return Observed(keypairs=keypairs, security_groups=groups, images=images)


@activity.defn(name="observe_cloud_resources")
async def observe_cloud_resources(request: ObserveRequest) -> Observed:
    cloud = request.cloud.client()
    return await cloud._run(
        "list keypairs, security groups and images", lambda conn: observe(conn, request.owner)
    )


# --- apply -----------------------------------------------------------------------------------


def _create_keypair(conn: Connection, step: CreateKeypair) -> StepResult:
    existing = conn.compute.find_keypair(step.cloud_name, ignore_missing=True)
    if existing is not None:
        if same_key(existing.public_key or "", step.public_key):
            return StepResult(step=step, resource_id=step.cloud_name, detail="already there")
        raise _fail(
            f"keypair {step.cloud_name!r} exists with another public key; not ours, "
            "left alone (rename or delete it by hand)"
        )
    conn.compute.create_keypair(name=step.cloud_name, public_key=step.public_key)
    return StepResult(step=step, resource_id=step.cloud_name, detail="created")


def _delete_keypair(conn: Connection, step: DeleteKeypair) -> StepResult:
    existing = conn.compute.find_keypair(step.cloud_name, ignore_missing=True)
    if existing is None:
        return StepResult(step=step, detail="already gone")
    if not same_key(existing.public_key or "", step.public_key):
        return StepResult(step=step, detail="refused: its public key is not the one we uploaded")
    conn.compute.delete_keypair(step.cloud_name, ignore_missing=True)
    return StepResult(step=step, detail="deleted")


def _ensure_rules(conn: Connection, group: Any, rules: list[Rule], tag: str) -> None:
    wanted = set(rules)
    names = _group_names(conn, tag)
    have = {_rule(raw, names): raw["id"] for raw in group.security_group_rules or []}
    for rule in sorted(wanted - set(have), key=Rule.key):
        _add_rule(conn, group.id, rule, names)
    for rule, rule_id in have.items():
        if rule not in wanted:
            conn.network.delete_security_group_rule(rule_id, ignore_missing=True)


def _add_rule(conn: Connection, group_id: str, rule: Rule, names: dict[str, str]) -> None:
    remote_id = None
    if rule.remote_group is not None:
        ids = [i for i, n in names.items() if n == rule.remote_group]
        if len(ids) != 1:  # the planner only sends rules whose group is recorded
            raise _fail(
                f"rule {rule.key()}: remote group {rule.remote_group!r} is "
                f"{'not' if not ids else 'more than once'} among our security groups"
            )
        remote_id = ids[0]
    try:
        conn.network.create_security_group_rule(
            security_group_id=group_id,
            direction=rule.direction,
            ethertype=rule.ethertype,
            protocol=rule.protocol,
            port_range_min=rule.port_min,
            port_range_max=rule.port_max,
            remote_ip_prefix=rule.remote_ip_prefix,
            remote_group_id=remote_id,
        )
    except sdk_exceptions.ConflictException:
        pass  # already there: a retried step


def _create_group(conn: Connection, step: CreateSecurityGroup, tag: str) -> StepResult:
    found = [
        g for g in conn.network.security_groups(name=step.name, tags=tag) if tag in (g.tags or [])
    ]
    if found:
        group, detail = found[0], "adopted (tagged ours)"
    else:
        group, detail = _new_group(conn, step, tag), "created"
    _ensure_rules(conn, group, step.rules, tag)
    return StepResult(step=step, resource_id=group.id, detail=detail)


def _new_group(conn: Connection, step: CreateSecurityGroup, tag: str) -> Any:
    try:
        # Tagged in the create itself (Neutron's tag-creation extension): no untagged moment.
        group = conn.network.create_security_group(
            name=step.name, description=step.description, tags=[tag]
        )
    except sdk_exceptions.BadRequestException as exc:
        if "tags" not in str(exc):
            raise
        # An older Neutron: tag right after creating. A crash in between leaves an untagged
        # group, which is never ours: left for an operator (docs/clouds.md), not swept.
        group = conn.network.create_security_group(name=step.name, description=step.description)
        conn.network.set_tags(group, [tag])
    return conn.network.get_security_group(group.id)


def _update_rules(conn: Connection, step: UpdateRules, tag: str) -> StepResult:
    group = conn.network.get_security_group(step.group_id)
    if tag not in (group.tags or []):
        raise _fail(f"security group {step.group_id} is no longer tagged {tag}; left alone")
    names = _group_names(conn, tag)
    for rule in step.add:
        _add_rule(conn, step.group_id, rule, names)
    for rule_id in step.remove:
        conn.network.delete_security_group_rule(rule_id, ignore_missing=True)
    return StepResult(step=step, resource_id=step.group_id, detail="rules updated")


def _delete_group(conn: Connection, step: DeleteSecurityGroup, tag: str) -> StepResult:
    group = conn.network.find_security_group(step.group_id, ignore_missing=True)
    if group is None:
        return StepResult(step=step, detail="already gone")
    if tag not in (group.tags or []):
        return StepResult(step=step, detail=f"refused: not tagged {tag}")
    conn.network.delete_security_group(step.group_id, ignore_missing=True)
    return StepResult(step=step, detail="deleted")


def _upload_image(conn: Connection, step: UploadImage, tag: str) -> StepResult:
    for image in conn.image.images(tag=tag):
        props = image.properties or {}
        ours = tag in (image.tags or []) and props.get(IMAGE_PROPERTY) == step.name
        if not ours or props.get(CHECKSUM_PROPERTY) != step.checksum:
            continue
        if image.status == "active":
            return StepResult(
                step=step,
                resource_id=image.id,
                created_at=image.created_at,
                detail="adopted (uploaded before)",
            )
        conn.image.delete_image(image.id, ignore_missing=True)  # a half-done upload of ours
    if step.spec.url is not None:  # through the worker: Glance's web-download is optional
        with tempfile.TemporaryDirectory(prefix="lockmaster-image-") as folder:
            local = Path(folder) / "image"
            try:
                _download(step.spec.url, local)
            except httpx.HTTPError as exc:
                raise ApplicationError(f"image {step.name!r}: download failed: {exc}") from exc
            return _upload_file(conn, step, tag, local)
    assert step.spec.file is not None
    return _upload_file(conn, step, tag, step.spec.file)


def _upload_file(conn: Connection, step: UploadImage, tag: str, path: Path) -> StepResult:
    image = conn.image.create_image(
        step.name,
        filename=str(path),
        disk_format=step.spec.disk_format,
        container_format="bare",
        tags=[tag],
        allow_duplicates=True,  # versions share a name; our checksum property tells them apart
        validate_checksum=False,
        wait=False,
        **{IMAGE_PROPERTY: step.name, CHECKSUM_PROPERTY: step.checksum},
    )
    image = conn.image.get_image(image.id)
    return StepResult(
        step=step, resource_id=image.id, created_at=image.created_at, detail="uploaded"
    )


def _delete_image(conn: Connection, step: DeleteImage, tag: str) -> StepResult:
    image = conn.image.find_image(step.image_id, ignore_missing=True)
    if image is None:
        return StepResult(step=step, detail="already gone")
    if tag not in (image.tags or []):
        return StepResult(step=step, detail=f"refused: not tagged {tag}")
    conn.image.delete_image(step.image_id, ignore_missing=True)
    return StepResult(step=step, detail="deleted")


def apply(conn: Connection, owner: str, step: Step) -> StepResult:
    tag = owner_tag(owner)
    if isinstance(step, CreateKeypair):
        return _create_keypair(conn, step)
    if isinstance(step, DeleteKeypair):
        return _delete_keypair(conn, step)
    if isinstance(step, CreateSecurityGroup):
        return _create_group(conn, step, tag)
    if isinstance(step, UpdateRules):
        return _update_rules(conn, step, tag)
    if isinstance(step, DeleteSecurityGroup):
        return _delete_group(conn, step, tag)
    if isinstance(step, UploadImage):
        return _upload_image(conn, step, tag)
    if isinstance(step, DeleteImage):
        return _delete_image(conn, step, tag)
    assert isinstance(step, SwitchKeypair)
    raise _fail(
        "switch-keypair changes the pool configuration, not the cloud: the caller "
        "applies it and records it with record_step"
    )


@activity.defn(name="apply_cloud_resource_step")
async def apply_cloud_resource_step(request: ApplyRequest) -> StepResult:
    cloud = request.cloud.client()
    async with heartbeating(f"{request.step.action} on {cloud.where}"):
        return await cloud._run(
            request.step.action, lambda conn: apply(conn, request.owner, request.step)
        )


ACTIVITIES = [resolve_cloud_resources, observe_cloud_resources, apply_cloud_resource_step]
