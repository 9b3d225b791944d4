"""Install tests as piuparts makes them: each package in a fresh minimal root of the target
distribution (a copy of the prepared `minbase` root), whose APT sources are the distribution and
the test repositories, the test repositories pinned above it (this change's first, then those of
the changes ahead in the gate). apt resolves dependencies from both, so a package depending on
libc6 installs, and a dependency that the change's own packages provide comes from its test
repository even where the distribution has another version. The package is installed, its smoke
script run, it is purged with the dependencies it pulled in, and the root must be as before.

Standard library only: uploaded with pkgtool.py to build nodes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from pkg_cleanbuild import CleanRoot
from pkg_common import interesting, say
from pkg_install import Package, RepoSource
from pkg_installers import DebInstaller
from pkg_roots import (
    ExtraRepo,
    PreparedRoot,
    apt_update,
    chroot_command,
    dpkg_lock,
    fresh_copy,
    in_root,
    lock_diff,
    parse_lock,
    prepare_root,
    release_label,
    write_sources,
)

# Besides the package manager's own files: what any package install touches in a real root and
# piuparts ignores too (caches rebuilt by triggers, logs).
IGNORED_DIST = [
    "etc/ld.so.cache", "var/cache/ldconfig", "var/cache/man", "var/log", "run",
    "var/lib/ucf", "var/lib/systemd/deb-systemd-helper-enabled",
    "var/lib/systemd/deb-systemd-helper-masked", "var/cache/private",
]  # fmt: skip


class DistDebInstaller(DebInstaller):
    ignored = DebInstaller.ignored + IGNORED_DIST

    def __init__(self, source: RepoSource, work: Path, prefix: list[str],
                 clean: CleanRoot) -> None:
        super().__init__(source, work, prefix)
        self.clean = clean
        self.prepared: PreparedRoot | None = None
        self.before: dict[Path, str] = {}

    def own_repo(self, root: Path) -> ExtraRepo:
        """This change's test repository as the root sees it: over http as it is, or copied
        into the root when it is a local directory (the root cannot see the node's paths)."""
        info = self.info
        url = self.repo_url
        label = release_label(url, info["codename"])
        if url.startswith("file://"):
            inside = root / "srv/lockmaster/test-repo"
            shutil.copytree(url.removeprefix("file://"), inside)
            url = "file:/srv/lockmaster/test-repo"
        return ExtraRepo(url, info["codename"], info["component"], label)

    def make_root(self, root: Path) -> None:
        if self.prepared is None:
            self.prepared = prepare_root(self.clean.dist, "minbase", (), self.clean.roots,
                                         self.clean.max_age)
            say(f"base root: {self.prepared.describe()}")
        fresh_copy(self.prepared, root)
        sources = write_sources(root, self.clean.dist, [self.own_repo(root), *self.clean.extra])
        say("APT sources of the root (test repositories pinned above the distribution):\n"
            + sources)
        apt_update(root)
        self.before[root] = dpkg_lock(root)

    def in_root_command(self, root: Path, cmd: Sequence[str]) -> list[str]:
        return chroot_command(root, cmd)

    def install(self, root: Path, pkg: Package) -> list[str]:
        result = in_root(root, ["apt-get", "install", "-y", "--no-install-recommends",
                                f"{pkg.name}={pkg.version}"])
        status = self.status(root, pkg.name)
        if result.ok and status == "ii":
            return []
        why = interesting(result.output, [
            r"^E: ", r"dpkg: error", r"returned error exit status", r"trying to overwrite",
            r"[Cc]onflict", r"Depends:", r"unmet", r"not installable"])
        return [f"install failed (apt-get exit {result.returncode}, dpkg status {status!r})"
                + "".join(f"\n      {w}" for w in why)]

    def after_install(self, root: Path, pkg: Package) -> None:
        """The root's lock file with the package installed: what it was tested with."""
        lock = dpkg_lock(root)
        name = f"{pkg.name}_{pkg.arch}.lock"
        (self.work / "locks").mkdir(exist_ok=True)
        (self.work / "locks" / name).write_text(lock)
        artifacts = os.environ.get("LOCKMASTER_ARTIFACTS")
        if artifacts:
            dest = Path(artifacts) / "install-locks"
            dest.mkdir(parents=True, exist_ok=True)
            (dest / name).write_text(lock)
        added = lock_diff(self.before.get(root, ""), lock)
        say(f"installed with {pkg.label}: {len(added)} package(s)")
        for line in added:
            say(f"  {line}")

    def remove(self, root: Path, pkg: Package) -> list[str]:
        result = in_root(root, ["apt-get", "purge", "-y", "--autoremove", pkg.name])
        status = self.status(root, pkg.name)
        if result.ok and status in ("not-installed", "un", "pn"):
            return []
        why = interesting(result.output, [r"^E: ", r"dpkg: error", r"returned error"])
        return [f"removal failed (apt-get purge exit {result.returncode}, dpkg status "
                f"{status!r})" + "".join(f"\n      {w}" for w in why)]

    def installed_others(self, root: Path) -> list[str]:
        """Packages that were not in the root before the install, or at another version."""
        before = parse_lock(self.before.get(root, ""))
        now = parse_lock(dpkg_lock(root))
        return [f"{key} {version}" for key, version in sorted(now.items())
                if before.get(key) != version]
