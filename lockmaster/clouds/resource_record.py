"""Folding an applied step's result into the record of what lockmaster made (pure).

The caller (the onboarding workflow) keeps a `ResourceRecord`; after each step of a plan
(lockmaster/clouds/resources.py) it calls `record_step` with the activity's `StepResult`.
"""

from __future__ import annotations

from lockmaster.clouds.images import ImageRecord
from lockmaster.clouds.resources import (
    CreateKeypair,
    CreateSecurityGroup,
    DeleteImage,
    DeleteKeypair,
    DeleteSecurityGroup,
    KeypairRecord,
    ResourceRecord,
    SecurityGroupRecord,
    StepResult,
    SwitchKeypair,
    UpdateRules,
    UploadImage,
    names_of,
)


def record_step(record: ResourceRecord, result: StepResult) -> ResourceRecord:
    """The record once `result.step` has been applied (pure; the caller keeps the record)."""
    out = record.model_copy(deep=True)
    step = result.step
    if isinstance(step, CreateKeypair):
        entry = out.keypairs.get(step.spec_name)
        if entry is not None and step.cloud_name in (entry.cloud_name, entry.next_name):
            pass  # re-created after a deletion outside: the record already knows it
        elif entry is None:
            out.keypairs[step.spec_name] = KeypairRecord(
                cloud_name=step.cloud_name, public_key=step.public_key
            )
        else:  # rotation: the new key exists beside the old one
            entry.phase, entry.next_name, entry.next_public_key = (
                "switching",
                step.cloud_name,
                step.public_key,
            )
    elif isinstance(step, SwitchKeypair):
        entry = out.keypairs[step.spec_name]
        assert entry.next_name is not None and entry.next_public_key is not None
        out.keypairs[step.spec_name] = KeypairRecord(
            cloud_name=entry.next_name,
            public_key=entry.next_public_key,
            phase="deleting-old",
            old_name=entry.cloud_name,
            old_public_key=entry.public_key,
        )
    elif isinstance(step, DeleteKeypair):
        entry = out.keypairs.get(step.spec_name)
        if entry is not None:
            _forget_keypair(out, step.spec_name, entry, step.cloud_name)
    elif isinstance(step, CreateSecurityGroup):
        assert result.resource_id is not None
        out.security_groups[step.name] = SecurityGroupRecord(
            id=result.resource_id, rules=step.rules
        )
        out.sightings.pop(f"sg:{result.resource_id}", None)
    elif isinstance(step, UpdateRules):
        out.security_groups[step.name] = SecurityGroupRecord(id=step.group_id, rules=step.rules)
    elif isinstance(step, DeleteSecurityGroup):
        if (
            out.security_groups.get(step.name, None)
            and out.security_groups[step.name].id == step.group_id
        ):
            del out.security_groups[step.name]
        out.sightings.pop(f"sg:{step.group_id}", None)
    elif isinstance(step, UploadImage):
        assert result.resource_id is not None and result.created_at is not None
        out.images[result.resource_id] = ImageRecord(
            id=result.resource_id,
            name=step.name,
            checksum=step.checksum,
            created_at=result.created_at,
        )
        out.sightings.pop(f"image:{result.resource_id}", None)
    elif isinstance(step, DeleteImage):
        out.images.pop(step.image_id, None)
        out.sightings.pop(f"image:{step.image_id}", None)
    return out


def _forget_keypair(out: ResourceRecord, name: str, entry: KeypairRecord, gone: str) -> None:
    """Drop one deleted cloud keypair from a spec keypair's record; the others stay recorded
    until their own delete is recorded (a failed second delete must not leak an untagged key)."""
    if gone == entry.old_name:
        entry.phase, entry.old_name, entry.old_public_key = "active", None, None
    elif gone == entry.next_name:
        entry.phase, entry.next_name, entry.next_public_key = "active", None, None
    elif gone == entry.cloud_name:
        rest = [(n, k) for n, k in names_of(entry) if n != gone]
        if not rest:
            del out.keypairs[name]
            return
        # Only while the spec no longer names it: keep what remains to be deleted.
        out.keypairs[name] = KeypairRecord(cloud_name=rest[0][0], public_key=rest[0][1])
