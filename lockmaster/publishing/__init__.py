"""Publishing merged packages: the stable APT and RPM repositories (snapshots switched
atomically, signed, verified as clients would), provenance checks, transactional mirror sync,
and the consistency reader. Plain synchronous code: the Temporal activities wrap it.

Every operation is idempotent and resumable (a rerun after a crash at any point finishes the
job), takes an optional `progress(str)` callback called at least every few seconds (the
activity heartbeat), and raises `PublishError` subclasses whose `retryable` says whether a
retry can help. See docs/publishing.md.
"""

from lockmaster.publishing.apt_repo import publish_apt
from lockmaster.publishing.errors import (
    ConflictError,
    HostKeyMismatch,
    InvalidInput,
    LockTimeout,
    MirrorError,
    MirrorUnavailable,
    ProvenanceError,
    PublishError,
    ToolError,
    VerificationError,
)
from lockmaster.publishing.mirrors import mirror_state, prune_mirror, sync_mirror
from lockmaster.publishing.model import (
    AptRepoConfig,
    BuildManifest,
    DirectoryMirror,
    ManifestPackage,
    Mirror,
    MirrorRecord,
    PackageFormat,
    PromotedSource,
    PublishedPackage,
    PublishRequest,
    RpmRepoConfig,
    RsyncSSHMirror,
    SigningKey,
    SnapshotInfo,
    SnapshotRecord,
    SyncReport,
)
from lockmaster.publishing.readers import (
    RepositoryRead,
    check_apt_repository,
    check_rpm_repository,
    read_apt_repository,
    read_rpm_repository,
)
from lockmaster.publishing.rpm_repo import publish_rpm
from lockmaster.publishing.snapshots import RepoLayout, prune_snapshots
from lockmaster.publishing.tools import Progress


def publish(repo: AptRepoConfig | RpmRepoConfig, key: SigningKey, request: PublishRequest, *,
            progress: Progress | None = None, now: float | None = None) -> SnapshotInfo:
    """publish_apt or publish_rpm, by the repository's kind."""
    if isinstance(repo, AptRepoConfig):
        return publish_apt(repo, key, request, progress=progress, now=now)
    return publish_rpm(repo, key, request, progress=progress, now=now)


__all__ = [
    "AptRepoConfig",
    "BuildManifest",
    "ConflictError",
    "DirectoryMirror",
    "HostKeyMismatch",
    "InvalidInput",
    "LockTimeout",
    "ManifestPackage",
    "Mirror",
    "MirrorError",
    "MirrorRecord",
    "MirrorUnavailable",
    "PackageFormat",
    "Progress",
    "PromotedSource",
    "ProvenanceError",
    "PublishError",
    "PublishRequest",
    "PublishedPackage",
    "RepoLayout",
    "RepositoryRead",
    "RpmRepoConfig",
    "RsyncSSHMirror",
    "SigningKey",
    "SnapshotInfo",
    "SnapshotRecord",
    "SyncReport",
    "ToolError",
    "VerificationError",
    "check_apt_repository",
    "check_rpm_repository",
    "mirror_state",
    "prune_mirror",
    "prune_snapshots",
    "publish",
    "publish_apt",
    "publish_rpm",
    "read_apt_repository",
    "read_rpm_repository",
    "sync_mirror",
]
