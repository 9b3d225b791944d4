"""The stable RPM repository, built with createrepo_c, one snapshot per publish.

Snapshot tree (served as is; `.lockmaster/` is private and never synced to mirrors):

    Packages/<name>-<version>-<release>.<arch>.rpm    signed with rpmsign
    repodata/repomd.xml, repodata/repomd.xml.asc       detached ASCII-armored signature
    repodata/<sha256>-{primary,filelists,other}.xml.gz (unique names: createrepo_c's default)
    signing-key.asc
    .lockmaster/snapshot.json

Order (as rpm and createrepo_c need it): new packages copied in (private copies, never
hardlinks) and signed with rpmsign (`__gpg` = /usr/bin/gpg), then `createrepo_c --update`
(unchanged packages' metadata reused from the previous snapshot's repodata, by size and mtime:
hardlinks keep both), then repomd.xml signed after createrepo_c's last run.

Packages are never removed (dnf picks the newest version); a file name already published with
other content is refused. Each snapshot also keeps the previous snapshot's metadata files
(their names are unique), so a dnf that read the old repomd.xml just before the switch still
finds the primary.xml it asks for.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lockmaster.publishing import metadata
from lockmaster.publishing.errors import ConflictError, PublishError
from lockmaster.publishing.model import (
    PackageFormat,
    PublishRequest,
    RpmRepoConfig,
    SigningKey,
    SnapshotInfo,
)
from lockmaster.publishing.signing import rpmsign, sign_detached
from lockmaster.publishing.snapshots import BuildContext, Built, IndexedPackage, transaction
from lockmaster.publishing.tools import Progress, run, sha256_file
from lockmaster.publishing.verify import verify_rpm_tree

REPOMD = "repodata/repomd.xml"


def _repomd_files(tree: Path) -> list[str]:
    path = tree / REPOMD
    if not path.exists():
        return []
    _, datas = metadata.parse_repomd(path.read_bytes())
    return [d.href for d in datas]


class RpmBuilder:
    format = PackageFormat.RPM

    def __init__(self, config: RpmRepoConfig) -> None:
        self.config = config

    def link_in_clone(self, rel: str) -> bool:
        # packages and uniquely named metadata files never change once written
        return (rel.startswith("Packages/") and rel.endswith(".rpm")) or (
            rel.startswith("repodata/") and rel not in (REPOMD, f"{REPOMD}.asc"))

    def skip_in_clone(self, rel: str) -> bool:
        return rel == f"{REPOMD}.asc"

    def build(self, ctx: BuildContext) -> Built:
        packages_dir = ctx.staging / "Packages"
        packages_dir.mkdir(exist_ok=True)
        known = {p.path: p for p in ctx.previous_record.packages} if ctx.previous_record else {}
        placed: dict[str, str] = {}
        to_sign: list[Path] = []
        for staged in ctx.inputs:
            rel = f"Packages/{staged.path.name}"
            if rel in placed.values():
                raise ConflictError(f"two packages of the manifest are both named "
                                    f"{staged.path.name}")
            placed[staged.entry.file] = rel
            target = ctx.staging / rel
            if target.exists():
                old = known.get(rel)
                if old is not None and old.source_sha256 == staged.entry.sha256.lower():
                    continue  # the very same build is already published
                raise ConflictError(
                    f"{rel} is already published with other content (built from "
                    f"{old.source_commit if old else 'unknown'}); a published package never "
                    "changes: publish a new version or release")
            shutil.copyfile(staged.path, target)
            to_sign.append(target)
        if to_sign:
            rpmsign(to_sign, ctx.key, ctx.beat.raw)
        run(["createrepo_c", "--update", "--no-database", "--workers",
             str(self.config.createrepo_workers), "--excludes", ".lockmaster/*",
             str(ctx.staging)], what="createrepo_c", progress=ctx.beat.raw)
        self._keep_previous_metadata(ctx)
        return Built(packages=self._indexed(ctx), placed=placed)

    def _keep_previous_metadata(self, ctx: BuildContext) -> None:
        wanted = set(_repomd_files(ctx.staging))
        if ctx.previous is not None:
            for href in _repomd_files(ctx.previous):
                wanted.add(href)
                target = ctx.staging / href
                if not target.exists():
                    os.link(ctx.previous / href, target)
        for found in (ctx.staging / "repodata").iterdir():
            rel = f"repodata/{found.name}"
            if rel not in wanted and rel not in (REPOMD, f"{REPOMD}.asc"):
                found.unlink()

    def _indexed(self, ctx: BuildContext) -> list[IndexedPackage]:
        _, datas = metadata.parse_repomd((ctx.staging / REPOMD).read_bytes())
        primary = next((d for d in datas if d.type == "primary"), None)
        if primary is None:
            raise PublishError(f"createrepo_c wrote no primary metadata in {ctx.staging}")
        content = metadata.decompress(primary.href, (ctx.staging / primary.href).read_bytes())
        found: list[IndexedPackage] = []
        for entry in metadata.parse_primary(content):
            algo, digest = entry.checksum
            if algo != "sha256":
                digest, _ = sha256_file(ctx.staging / entry.href)
            found.append(IndexedPackage(path=entry.href, name=entry.name, version=entry.evr,
                                        arch=entry.arch, sha256=digest, size=entry.size))
        return sorted(found, key=lambda p: p.path)

    def sign(self, ctx: BuildContext) -> None:
        sign_detached(ctx.staging / REPOMD, ctx.key, ctx.beat.raw)

    def verify(self, ctx: BuildContext, built: Built) -> list[str]:
        return verify_rpm_tree(ctx.staging, ctx.key.public_key, trusted=ctx.trusted,
                               progress=ctx.beat.raw)


def publish_rpm(repo: RpmRepoConfig, key: SigningKey, request: PublishRequest, *,
                progress: Progress | None = None, now: float | None = None) -> SnapshotInfo:
    """Publish the .rpm packages of `request`'s manifest into the stable RPM repository as
    snapshot `request.snapshot_id`, then switch `current` to it. Idempotent (see
    snapshots.transaction)."""
    return transaction(RpmBuilder(repo), repo.root, key, request, repo.grace_seconds,
                       progress=progress, now=now)
