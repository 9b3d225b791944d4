"""The publishing host's activities: the stable repository (per format: `<publish root>/deb`,
`<publish root>/rpm`) and its mirrors (`<mirror path>/deb`, `<mirror path>/rpm`), through
lockmaster/publishing (reprepro, createrepo_c, gpg, rsync).

Both are idempotent (a snapshot id names the transaction; a mirror that already serves it or a
newer one is left alone) and heartbeat while they work, so a dead publishing host is noticed and
the retry resumes where the last try stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from lockmaster import publishing as lib
from lockmaster.config.models import LockmasterConfig, MirrorConfig
from lockmaster.git.cache import RepoCache
from lockmaster.metrics import observe
from lockmaster.metrics.domain import domain
from lockmaster.model.publish import (
    BuildSource,
    PublishStableRequest,
    PublishStableResult,
    SyncMirrorRequest,
    SyncMirrorResult,
)
from lockmaster.publishing.signing import usable_home
from lockmaster.publishing.snapshots import KEY_FILE, locked
from lockmaster.publishing.tools import Heartbeat
from lockmaster.temporal.heartbeat import Beat, heartbeating

FORMATS = ("deb", "rpm")
DOWNLOAD_TIMEOUT = 300.0
# Beside the repositories: what clients trust; the same name as in every published snapshot.
PUBLIC_KEY = KEY_FILE


def _failure(exc: lib.PublishError) -> ApplicationError:
    """A refusal (provenance, bad input) is final; a mirror or tool hiccup is retried."""
    return ApplicationError(str(exc), type=type(exc).__name__,
                            non_retryable=not getattr(exc, "retryable", True))


class PublishingActivities:
    def __init__(self, config: LockmasterConfig, cache: RepoCache,
                 connections: dict[str, str]) -> None:
        self.config = config
        self.cache = cache
        self.connections = connections
        self.root = config.publish_root

    # --- configuration ------------------------------------------------------------------------

    def signing_key(self) -> lib.SigningKey:
        signing = self.config.publishing.signing
        if signing is None:
            raise ApplicationError("publishing.signing is not configured", non_retryable=True)
        home = usable_home(self.config.resolve(signing.gnupg_home))
        if signing.generate:
            _generate_key(home, signing.key_id)
        fingerprint = _fingerprint(home, signing.key_id)
        public = self.root / PUBLIC_KEY
        if not public.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            exported = subprocess.run(
                ["gpg", "--homedir", str(home), "--batch", "--armor", "--export", fingerprint],
                capture_output=True, check=True).stdout
            tmp = public.with_suffix(".tmp")
            tmp.write_bytes(exported)
            tmp.replace(public)
        return lib.SigningKey(gnupghome=home, fingerprint=fingerprint, public_key=public)

    def repository(self, fmt: str) -> lib.AptRepoConfig | lib.RpmRepoConfig:
        publishing = self.config.publishing
        grace = publishing.grace_period
        if fmt == "deb":
            return lib.AptRepoConfig(root=self.root / "deb", codename=publishing.codename,
                                     component=publishing.component, grace_seconds=grace)
        return lib.RpmRepoConfig(root=self.root / "rpm", grace_seconds=grace)

    def mirror(self, name: str, fmt: str) -> lib.DirectoryMirror | lib.RsyncSSHMirror:
        config = self._mirror_config(name)
        if config.driver == "directory":
            return lib.DirectoryMirror(name=name,
                                       path=self.config.resolve(config.path) / fmt)
        assert config.host and config.user and config.key_file and config.known_hosts_file
        return lib.RsyncSSHMirror(
            name=name, host=config.host, port=config.port, user=config.user,
            key_file=self.config.resolve(config.key_file),
            known_hosts_file=self.config.resolve(config.known_hosts_file),
            path=f"{config.path.rstrip('/')}/{fmt}")

    def _mirror_config(self, name: str) -> MirrorConfig:
        for mirror in self.config.publishing.mirrors:
            if mirror.name == name:
                return mirror
        raise ApplicationError(f"no mirror {name!r} is configured", non_retryable=True)

    # --- activities ---------------------------------------------------------------------------

    @activity.defn(name="publish_stable")
    async def publish_stable(self, request: PublishStableRequest) -> PublishStableResult:
        """_publish_stable, its latency observed (lockmaster_publication_seconds)."""
        started, ok = time.monotonic(), False
        try:
            result = await self._publish_stable(request)
            ok = True
            return result
        finally:
            observe(domain().observe_publication, "ok" if ok else "error",
                    time.monotonic() - started)

    async def _publish_stable(self, request: PublishStableRequest) -> PublishStableResult:
        """Fetch the build's packages, check where they come from, and publish them as
        `request.snapshot` in the stable repository of each format they have."""
        change = request.change
        if change.commit is None:
            raise ApplicationError("the change names no merged commit", non_retryable=True)
        incoming = self.root / "incoming" / request.snapshot
        promoted = _promoted(request)
        async with heartbeating("starting") as beat:
            beat(f"fetching {request.packages_url}")
            manifest, manifest_sha = await asyncio.to_thread(_download_packages,
                                                             request.packages_url, incoming)
            pinned = request.provenance.manifest_sha256 if request.provenance else None
            if pinned and manifest_sha != pinned:
                raise ApplicationError(
                    f"{request.packages_url}manifest.json changed since its build was chosen "
                    f"(sha256 {manifest_sha}, was {pinned}): refusing to publish other "
                    "packages than those chosen", non_retryable=True)
            beat(f"fetching {change.project} {change.branch}")
            await self.cache.fetch(self.connections[change.project], change.project)
            git_repo = self.cache.path(self.connections[change.project], change.project)
            key = await asyncio.to_thread(self.signing_key)
            formats = sorted({p["format"] for p in manifest.get("packages", [])} & set(FORMATS))
            if not formats:
                raise ApplicationError(f"the build's manifest lists no .deb or .rpm packages "
                                       f"({request.packages_url}manifest.json)",
                                       non_retryable=True)
            added: list[str] = []
            origin = ""
            for fmt in formats:
                publish = lib.PublishRequest(
                    snapshot_id=request.snapshot, manifest=incoming / "manifest.json",
                    files_dir=incoming, git_repo=git_repo, branch=change.branch,
                    promoted=promoted)
                try:
                    info = await asyncio.to_thread(lib.publish, self.repository(fmt), key,
                                                   publish, progress=beat)
                except lib.PublishError as exc:
                    raise _failure(exc) from exc
                added += info.added
                origin = next((c for c in info.checks if c.startswith("provenance:")), "")
        await asyncio.to_thread(shutil.rmtree, incoming, True)
        return PublishStableResult(snapshot=request.snapshot, formats=formats, added=added,
                                   detail=f"{len(added)} package file(s) added",
                                   provenance=origin.removeprefix("provenance: "))

    @activity.defn(name="sync_mirror")
    async def sync_mirror(self, request: SyncMirrorRequest) -> SyncMirrorResult:
        """Bring one mirror to `request.snapshot` (each format that has it), or leave it on the
        newer snapshot it serves already."""
        started, outcome = time.monotonic(), "error"
        try:
            async with heartbeating("starting") as beat:
                try:
                    result = await asyncio.to_thread(self._sync, request, beat)
                except lib.PublishError as exc:
                    raise _failure(exc) from exc
            outcome = "skipped" if result.skipped else "ok"
            return result
        finally:  # mirror sync latency (lockmaster_mirror_sync_seconds)
            observe(domain().observe_mirror_sync, request.mirror, outcome,
                    time.monotonic() - started)

    def _sync(self, request: SyncMirrorRequest, beat: Beat) -> SyncMirrorResult:
        config = self._mirror_config(request.mirror)
        added: list[str] = []
        removed: list[str] = []
        serving: list[str] = []
        skipped = True
        report_url = None
        # One sync per mirror at a time on this publishing host (two changes published close
        # together each sync every mirror; an rsync/SSH mirror has no lock of its own).
        lock = self.root / f".mirror-{request.mirror}.lock"
        with locked(lock, Heartbeat(beat, f"mirror {request.mirror}")):
            for fmt in FORMATS:
                source = self.root / fmt
                if not (source / "snapshots" / request.snapshot).is_dir():
                    continue  # this change published nothing of this format
                report = lib.sync_mirror(source, request.snapshot,
                                         self.mirror(request.mirror, fmt),
                                         grace_seconds=self.config.publishing.grace_period,
                                         progress=beat)
                if report.outcome == "synced":
                    skipped = False
                    added += report.added
                    removed += report.removed
                    if config.url:
                        report_url = urljoin(config.url.rstrip("/") + "/",
                                             f"{fmt}/snapshots/{request.snapshot}.sync.json")
                serving.append(f"{fmt}:{report.snapshot_id}")
        if not serving:
            raise ApplicationError(f"snapshot {request.snapshot} is not in the stable repository",
                                   non_retryable=True)
        return SyncMirrorResult(
            mirror=request.mirror, snapshot=request.snapshot, added=added, removed=removed,
            skipped=skipped, report_url=report_url, detail=", ".join(serving))


_GENERATE_LOCK = threading.Lock()


def _generate_key(home: Path, user_id: str) -> None:
    """The development signing key: made once, without passphrase (publishing.signing.generate)."""
    with _GENERATE_LOCK:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        listed = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--list-secret-keys",
                                 user_id], capture_output=True)
        if listed.returncode == 0:
            return
        subprocess.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "",
                        "--quick-gen-key", user_id, "rsa3072", "sign", "never"],
                       capture_output=True, check=True)


def _fingerprint(home: Path, key_id: str) -> str:
    listed = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--with-colons", "--list-secret-keys",
         key_id], capture_output=True, text=True)
    for line in listed.stdout.splitlines():
        fields = line.split(":")
        if fields[0] == "fpr":
            return fields[9]
    raise ApplicationError(f"no secret key {key_id!r} in the GnuPG home {home} "
                           f"(publishing.signing): {listed.stderr.strip()}", non_retryable=True)


def _promoted(request: PublishStableRequest) -> lib.PromotedSource | None:
    """A gate build's origin, as the library checks it (None: a rebuild, from the branch)."""
    prov = request.provenance
    if prov is None or prov.source is not BuildSource.GATE:
        return None
    if not (prov.tested_commit and prov.tested_tree and request.change.commit):
        raise ApplicationError("a promoted gate build must name the tested commit and tree and "
                               "the merged commit", non_retryable=True)
    return lib.PromotedSource(tested_commit=prov.tested_commit, tested_tree=prov.tested_tree,
                              merged_commit=request.change.commit)


def _download_packages(url: str, dest: Path) -> tuple[dict[str, object], str]:
    """The build's `packages` artifact: manifest.json (and its sha256), then every file it
    lists (checked by the publishing library against the manifest's hashes). Runs in a
    thread."""
    base = url if url.endswith("/") else url + "/"
    dest.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + DOWNLOAD_TIMEOUT
    with httpx.Client(timeout=DOWNLOAD_TIMEOUT) as http:
        try:
            response = http.get(base + "manifest.json")
            response.raise_for_status()
            manifest = response.json()
            digest = hashlib.sha256(response.content).hexdigest()
            (dest / "manifest.json").write_bytes(response.content)
            for entry in manifest.get("packages", []):
                rel = str(entry["file"])
                if rel.startswith("/") or ".." in Path(rel).parts:
                    raise ApplicationError(f"manifest entry {rel!r} leaves the artifact",
                                           non_retryable=True)
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with http.stream("GET", base + rel) as stream, target.open("wb") as f:
                    stream.raise_for_status()
                    for chunk in stream.iter_bytes():
                        f.write(chunk)
                if time.monotonic() > deadline:
                    raise ApplicationError(f"downloading {base} took over "
                                           f"{DOWNLOAD_TIMEOUT:g} s")
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            raise ApplicationError(f"cannot fetch the packages from {base}: {exc}") from exc
    return manifest, digest
