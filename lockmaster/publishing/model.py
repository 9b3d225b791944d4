"""The publishing library's data: what callers pass in, what comes back, what is kept on disk.

Results and specs that cross into Temporal (SnapshotInfo, SyncReport, the repository and mirror
specs, PublishRequest) are pydantic models. Nothing here carries a secret: a signing key and an
SSH key are referenced by path, never included.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from lockmaster.model.base import Model

SNAPSHOT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _snapshot_id(value: str) -> str:
    if not SNAPSHOT_ID_RE.match(value) or value.endswith((".json", ".tmp")):
        raise ValueError(
            f"invalid snapshot id {value!r}: use 1-128 characters of letters, digits and ._+- "
            "starting with a letter or digit (e.g. a publish id like 'publish-1234')"
        )
    return value


def _name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"invalid name {value!r}: letters, digits and ._- only")
    return value


SnapshotId = Annotated[str, AfterValidator(_snapshot_id)]
Name = Annotated[str, AfterValidator(_name)]


class PackageFormat(StrEnum):
    DEB = "deb"
    RPM = "rpm"


# --- inputs ---------------------------------------------------------------------------------


class ManifestPackage(BaseModel):
    """One package of a build manifest, as the package builder wrote it (extra keys ignored)."""

    model_config = ConfigDict(extra="ignore")

    file: str  # relative to the manifest's directory, e.g. "deb/x_1.0_all.deb"
    format: str  # "deb", "rpm" (others are checked but never published)
    name: str
    version: str
    arch: str
    sha256: str
    size: int


class BuildManifest(BaseModel):
    """The package builder's manifest: `{"source_commit": sha, "packages": [...]}`."""

    model_config = ConfigDict(extra="ignore")

    source_commit: str | None = None
    packages: list[ManifestPackage] = Field(default_factory=list)


class SigningKey(Model):
    """A GnuPG home holding the repository signing key (secret part), and the public key file
    clients are given. The passphrase, if any, is read from a file, never passed around."""

    gnupghome: Path
    fingerprint: str  # of the signing (sub)key's primary key, 40 hex digits
    public_key: Path  # ASCII-armored export of the public key
    passphrase_file: Path | None = None


class AptRepoConfig(Model):
    """A stable APT repository: one distribution (the OS codename), one component."""

    root: Path
    codename: str
    component: str = "main"
    architectures: list[str] = Field(default_factory=lambda: ["amd64"])
    origin: str = "lockmaster"
    label: str = "lockmaster"
    description: str = "lockmaster stable repository"
    default_section: str = "misc"
    default_priority: str = "optional"
    grace_seconds: float = 24 * 3600  # how long a replaced snapshot stays on disk
    apt_get_check: bool = True  # run apt-get update/download against the new snapshot


class RpmRepoConfig(Model):
    """A stable plain RPM repository (packages in Packages/, metadata by createrepo_c)."""

    root: Path
    grace_seconds: float = 24 * 3600
    createrepo_workers: int = 2


class PromotedSource(Model):
    """The manifest's source commit is not on the branch but the commit a gate tested (a
    speculative merge): accepted only when `merged_commit` is on the branch and has
    `tested_tree`, the tree of the tested commit."""

    tested_commit: str  # must be the manifest's source_commit
    tested_tree: str
    merged_commit: str


class PublishRequest(Model):
    """Publish the packages of one build manifest as snapshot `snapshot_id`.

    The snapshot id is the caller's (e.g. the publish workflow's id): a rerun with the same id
    and the same packages is a no-op that returns the first run's result.
    """

    snapshot_id: SnapshotId
    manifest: Path
    files_dir: Path | None = None  # where the manifest's "file" paths are; default: its directory
    git_repo: Path  # where source_commit must be reachable from `branch`
    branch: str
    # A promoted gate build (see PromotedSource); None: source_commit must be on `branch`.
    promoted: PromotedSource | None = None


# --- results and records --------------------------------------------------------------------


class PublishedPackage(Model):
    """A package file as the repository serves it, with where it came from."""

    path: str  # relative to the snapshot root, e.g. "pool/main/h/hello/hello_1.0_all.deb"
    name: str
    version: str
    arch: str
    sha256: str  # of the published file (RPMs are signed, so this differs from the built one)
    size: int
    source_commit: str
    source_sha256: str  # of the file the package builder made (the manifest's sha256)
    published_in: str  # the snapshot that first published it


class SnapshotInfo(Model):
    """What a publish returns (small: the full package list stays on disk in the record)."""

    snapshot_id: str
    format: PackageFormat
    repository: str  # the repository root
    parent: str | None  # the snapshot it was built on (the previous `current`)
    created_at: datetime
    source_commit: str
    added: list[str]  # package paths new in this snapshot
    removed: list[str]  # package paths the parent served and this one does not (replaced)
    package_count: int
    checks: list[str]  # the verifications that passed before the switch
    timings: dict[str, float]  # seconds per step up to "verify"; progress messages have all
    # A promoted gate build: source_commit is the commit the gate tested; this merged commit
    # on the branch has its tree, `source_tree`.
    merged_commit: str | None = None
    source_tree: str | None = None


class SnapshotRecord(Model):
    """Kept in every snapshot as .lockmaster/snapshot.json: the info, the provenance of every
    package the snapshot serves, and the manifest entries it was asked to publish."""

    info: SnapshotInfo
    packages: list[PublishedPackage]
    inputs: list[ManifestPackage]


class DirectoryMirror(Model):
    """A mirror in a local directory (or a network file system mounted here)."""

    kind: Literal["directory"] = "directory"
    name: Name
    path: Path


class RsyncSSHMirror(Model):
    """A mirror reached with rsync over SSH; the host key must be in `known_hosts_file`."""

    kind: Literal["rsync-ssh"] = "rsync-ssh"
    name: Name
    host: str
    port: int = 22
    user: str
    key_file: Path  # the private key's path on the publishing host
    known_hosts_file: Path
    path: str  # absolute path on the mirror host
    connect_timeout: float = 10.0
    io_timeout: int = 120  # rsync --timeout


Mirror = Annotated[DirectoryMirror | RsyncSSHMirror, Field(discriminator="kind")]


class SyncReport(Model):
    """What a mirror sync returns; also kept on the mirror as snapshots/<id>.sync.json."""

    mirror: str
    snapshot_id: str
    format: PackageFormat
    outcome: Literal["synced", "superseded"]  # superseded: the mirror already has a newer one
    previous_snapshot: str | None  # what the mirror served before
    added: list[str]  # package paths, against the mirror's previous snapshot
    removed: list[str]
    package_count: int
    bytes_sent: int  # by the attempt that completed the transfer
    files_transferred: int
    source_created_at: datetime  # when the snapshot was made (a mirror never goes back)
    started_at: datetime
    finished_at: datetime
    duration_seconds: float  # up to the snapshot being stored (the report is written then)
    timings: dict[str, float]  # seconds per step up to "check"; progress messages have all


class MirrorRecord(Model):
    """The report as stored on the mirror, with the full list of packages served."""

    report: SyncReport
    packages: list[str]
