"""The stable APT repository, built with reprepro, one snapshot per publish.

Snapshot tree (served as is; `.lockmaster/` is private and never synced to mirrors):

    dists/<codename>/{Release,InRelease,Release.gpg}
    dists/<codename>/<component>/binary-<arch>/{Packages,Packages.gz,Release}
    dists/<codename>/<component>/binary-<arch>/by-hash/SHA256/<sha256>   (Acquire-By-Hash)
    pool/<component>/<prefix>/<source>/<file>.deb
    signing-key.asc
    .lockmaster/snapshot.json, .lockmaster/reprepro/{conf,db}

reprepro's database and configuration live in the snapshot (copied, never shared), pool files
are hardlinked from the previous snapshot. reprepro has no SignWith here: signing is done
afterwards by signing.py, once reprepro's last run is over.

Clients reading while `current` switches: reprepro 5.3 writes no by-hash indices, so this module
adds them and sets `Acquire-By-Hash: yes`; each snapshot keeps the previous snapshot's by-hash
indices and, for one generation, the pool files it no longer references
(`--keepunreferencedfiles`, then `deleteunreferenced` at the next publish). An apt that read the
old InRelease just before the switch therefore still finds every index and .deb it asks for.
"""

from __future__ import annotations

import os
from pathlib import Path

from lockmaster.publishing import metadata
from lockmaster.publishing.errors import ConflictError, InvalidInput
from lockmaster.publishing.model import (
    AptRepoConfig,
    PackageFormat,
    PublishRequest,
    SigningKey,
    SnapshotInfo,
)
from lockmaster.publishing.signing import sign_release
from lockmaster.publishing.snapshots import (
    PRIVATE,
    BuildContext,
    Built,
    IndexedPackage,
    transaction,
)
from lockmaster.publishing.tools import Progress, run, write_atomic
from lockmaster.publishing.verify import verify_apt_tree

REPREPRO_DIR = f"{PRIVATE}/reprepro"
SIGNATURES = ("InRelease", "Release.gpg")
CHUNK = 100  # .deb files per reprepro call


class AptBuilder:
    format = PackageFormat.DEB

    def __init__(self, config: AptRepoConfig) -> None:
        self.config = config
        self.dist = f"dists/{config.codename}"

    # --- clone rules ---

    def link_in_clone(self, rel: str) -> bool:
        # pool files and by-hash entries are content-addressed and never modified
        return rel.startswith("pool/") or "/by-hash/" in rel

    def skip_in_clone(self, rel: str) -> bool:
        return rel in (f"{self.dist}/{name}" for name in SIGNATURES)

    # --- reprepro ---

    def _reprepro(self, ctx: BuildContext, *args: str, what: str, hint: str = "") -> str:
        gnupg = ctx.staging / PRIVATE / "gnupg-unused"
        gnupg.mkdir(mode=0o700, exist_ok=True)
        found = run(["reprepro", "-b", str(ctx.staging), "--confdir", f"+b/{REPREPRO_DIR}/conf",
                     "--dbdir", f"+b/{REPREPRO_DIR}/db", "--logdir", f"+b/{PRIVATE}/logs",
                     "--listdir", f"+b/{PRIVATE}/lists", *args],
                    what=what, progress=ctx.beat.raw,
                    env={"GNUPGHOME": str(gnupg), "HOME": str(gnupg)}, hint=hint)
        return found.stdout + found.stderr

    def _write_conf(self, ctx: BuildContext) -> None:
        c = self.config
        conf = ctx.staging / REPREPRO_DIR / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        text = "\n".join([
            f"Origin: {c.origin}",
            f"Label: {c.label}",
            f"Codename: {c.codename}",
            f"Architectures: {' '.join(c.architectures)}",
            f"Components: {c.component}",
            f"Description: {c.description}",
            "",
        ])
        write_atomic(conf / "distributions", text.encode())

    def build(self, ctx: BuildContext) -> Built:
        c = self.config
        known = set(c.architectures)
        for staged in ctx.inputs:
            if staged.entry.arch != "all" and staged.entry.arch not in known:
                raise InvalidInput(
                    f"{staged.entry.file} is for architecture {staged.entry.arch}, which the "
                    f"repository does not carry ({' '.join(c.architectures)}); add it to the "
                    "repository's architectures")
        self._write_conf(ctx)
        if ctx.previous is not None:
            # files kept for one generation (replaced in the previous publish) go now
            self._reprepro(ctx, "deleteunreferenced", what="reprepro deleteunreferenced")
        debs = [str(s.path) for s in ctx.inputs]
        for start in range(0, len(debs), CHUNK):
            self._reprepro(
                ctx, "--keepunreferencedfiles", "--export=never", "-S", c.default_section,
                "-P", c.default_priority, "-C", c.component, "includedeb", c.codename,
                *debs[start:start + CHUNK],
                what=f"reprepro includedeb ({len(debs[start:start + CHUNK])} packages)",
                hint="a package with this name and version may already be published with "
                     "other content: publish a new version")
        self._reprepro(ctx, "export", c.codename, what="reprepro export")
        packages = self._indexed(ctx)
        placed = self._placed(ctx, packages)
        self._by_hash(ctx)
        return Built(packages=packages, placed=placed)

    def _indexed(self, ctx: BuildContext) -> list[IndexedPackage]:
        found: dict[str, IndexedPackage] = {}
        for arch in self.config.architectures:
            index = ctx.staging / self.dist / self.config.component / f"binary-{arch}/Packages"
            for deb in metadata.parse_packages(index.read_text()):
                found.setdefault(deb.filename, IndexedPackage(
                    path=deb.filename, name=deb.package, version=deb.version,
                    arch=deb.architecture, sha256=deb.hashes.get("sha256", ""), size=deb.size))
        return sorted(found.values(), key=lambda p: p.path)

    def _placed(self, ctx: BuildContext, packages: list[IndexedPackage]) -> dict[str, str]:
        by_identity = {(p.name, p.version, p.arch): p for p in packages}
        placed: dict[str, str] = {}
        for staged in ctx.inputs:
            e = staged.entry
            entry = by_identity.get((e.name, e.version, e.arch))
            if entry is None:
                newer = sorted(f"{p.name} {p.version} ({p.arch})" for p in packages
                               if p.name == e.name)
                raise ConflictError(
                    f"{e.file} ({e.name} {e.version}) was not taken into the repository: it "
                    f"already serves {', '.join(newer) or 'another version'}; only newer "
                    "versions replace published ones: publish a higher version")
            if entry.sha256 != e.sha256.lower():
                raise ConflictError(
                    f"{e.name} {e.version} ({e.arch}) is already published with other content "
                    f"({entry.path}, sha256 {entry.sha256}); a published version never changes: "
                    "publish a new version")
            placed[e.file] = entry.path
        return placed

    def _release(self, ctx: BuildContext) -> Path:
        return ctx.staging / self.dist / "Release"

    def _by_hash(self, ctx: BuildContext) -> None:
        """by-hash/SHA256/<hash> for every index the Release lists (hardlinks), plus the ones
        of the previous snapshot's Release (already there, cloned); others removed. Then
        `Acquire-By-Hash: yes` in the Release."""
        release = self._release(ctx)
        fields = metadata.parse_release(release.read_text())
        files = metadata.release_files(fields)
        wanted: set[Path] = set()
        dist = ctx.staging / self.dist
        for path, entry in files.items():
            for algo, dirname in metadata.BY_HASH_DIRS.items():
                if algo not in entry.hashes:
                    continue
                target = dist / os.path.dirname(path) / "by-hash" / dirname / entry.hashes[algo]
                wanted.add(target)
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.link(dist / path, target)
        if ctx.previous is not None:
            old = ctx.previous / self.dist / "Release"
            if old.exists():
                for path, entry in metadata.release_files(
                        metadata.parse_release(old.read_text())).items():
                    for algo, dirname in metadata.BY_HASH_DIRS.items():
                        if algo in entry.hashes:
                            wanted.add(dist / os.path.dirname(path) / "by-hash" / dirname
                                       / entry.hashes[algo])
        for found in dist.rglob("by-hash/*/*"):
            if found not in wanted:
                found.unlink()
        if fields.get("Acquire-By-Hash") != "yes":
            lines = release.read_text().splitlines(keepends=True)
            at = next(i for i, line in enumerate(lines) if line.startswith(
                tuple(f"{h}:" for h in metadata.RELEASE_HASHES)))
            lines.insert(at, "Acquire-By-Hash: yes\n")
            write_atomic(release, "".join(lines).encode())

    # --- signing and verification ---

    def sign(self, ctx: BuildContext) -> None:
        sign_release(self._release(ctx), ctx.key, ctx.beat.raw)

    def verify(self, ctx: BuildContext, built: Built) -> list[str]:
        placed = set(built.placed.values())
        new = [(p.name, p.version, p.arch) for p in built.packages if p.path in placed]
        return verify_apt_tree(ctx.staging, ctx.key.public_key, self.config, download=new,
                               trusted=ctx.trusted, progress=ctx.beat.raw)


def publish_apt(repo: AptRepoConfig, key: SigningKey, request: PublishRequest, *,
                progress: Progress | None = None, now: float | None = None) -> SnapshotInfo:
    """Publish the .deb packages of `request`'s manifest into the stable APT repository as
    snapshot `request.snapshot_id`, then switch `current` to it. Idempotent (see
    snapshots.transaction)."""
    return transaction(AptBuilder(repo), repo.root, key, request, repo.grace_seconds,
                       progress=progress, now=now)

