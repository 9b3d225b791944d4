"""Base images: upload the configured ones, keep the newest two of each name, sweep leaks. Pure.

An image of ours carries lockmaster's tag and two properties (`lockmaster_image`: the spec name,
`lockmaster_checksum`: the sha256 of what was uploaded). A new build of an image is a new Glance
image; retention deletes all but the newest two (by Glance's created_at) of each name, never the
one the spec names now. Tagged images no record knows (an upload that crashed before it was
recorded) are deleted only after two sightings; Nodepool's OpenStack driver never swept them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, model_validator

from lockmaster.config.base import ConfigModel

if TYPE_CHECKING:
    from lockmaster.clouds.resources import DeleteImage, UploadImage

IMAGE_PROPERTY = "lockmaster_image"
CHECKSUM_PROPERTY = "lockmaster_checksum"
KEEP = 2  # images of each name kept: the current one and the one before (to roll back to)


class ImageSpec(ConfigModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    file: Path | None = None
    url: str | None = None
    disk_format: Literal["qcow2", "raw", "vmdk", "vhd", "vhdx", "vdi", "iso"] = "qcow2"

    @model_validator(mode="after")
    def _one_source(self) -> ImageSpec:
        if (self.file is None) == (self.url is None):
            raise ValueError(f"image {self.name!r}: give exactly one of file or url")
        return self


class ObservedImage(BaseModel):
    id: str
    name: str
    tags: list[str] = []
    properties: dict[str, str] = {}
    created_at: str  # ISO 8601, as Glance returns it
    status: str = "active"


class ImageRecord(BaseModel):
    id: str
    name: str  # the spec name
    checksum: str
    created_at: str


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def plan_images(
    specs: list[ImageSpec],
    checksums: dict[str, str],
    observed: list[ObservedImage],
    record: dict[str, ImageRecord],
    tag: str,
    sightings: dict[str, int],
) -> tuple[
    list[UploadImage | DeleteImage],
    list[tuple[str, str, str]],
    dict[str, ImageRecord],
    dict[str, int],
]:
    """-> (steps, drift as (name, id, what), the image record, the image sightings)."""
    from lockmaster.clouds.resources import DeleteImage, UploadImage

    steps: list[UploadImage | DeleteImage] = []
    drift: list[tuple[str, str, str]] = []
    by_id = {i.id: i for i in observed}
    kept: dict[str, ImageRecord] = {}
    for image_id, entry in record.items():
        image = by_id.get(image_id)
        if image is None:
            drift.append((entry.name, image_id, "deleted outside lockmaster"))
        elif tag not in image.tags:
            drift.append((entry.name, image_id, "our tag removed outside; no longer ours, kept"))
        else:
            kept[image_id] = entry
    wanted = {s.name: s for s in specs}
    for spec in specs:
        mine = sorted(
            (e for e in kept.values() if e.name == spec.name),
            key=lambda e: _when(e.created_at),
            reverse=True,
        )
        current = checksums[spec.name]
        if not any(e.checksum == current for e in mine):
            steps.append(UploadImage(name=spec.name, checksum=current, spec=spec))
        for old in mine[KEEP:]:
            if old.checksum != current:
                steps.append(
                    DeleteImage(
                        name=spec.name, image_id=old.id, reason=f"older than the newest {KEEP}"
                    )
                )
    for entry in kept.values():
        if entry.name not in wanted:
            steps.append(
                DeleteImage(name=entry.name, image_id=entry.id, reason="no longer in the spec")
            )
    seen_now: dict[str, int] = {}
    for image in observed:
        if tag not in image.tags or image.id in kept or image.id in record:
            continue
        name = image.properties.get(IMAGE_PROPERTY, image.name)
        adoptable = name in wanted and image.properties.get(CHECKSUM_PROPERTY) == checksums[name]
        if adoptable and not any(
            e.name == name and e.checksum == checksums[name] for e in kept.values()
        ):
            continue  # the upload step adopts it (the activity finds it by tag and checksum)
        seen = sightings.get(f"image:{image.id}", 0) + 1
        seen_now[f"image:{image.id}"] = seen
        if seen >= 2:
            steps.append(
                DeleteImage(
                    name=name, image_id=image.id, reason=f"tagged ours, unrecorded, seen {seen}x"
                )
            )
    return steps, drift, kept, seen_now
