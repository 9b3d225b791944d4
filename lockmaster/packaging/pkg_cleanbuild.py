"""DEB builds in a clean root of the target distribution, as Debian's buildds make them.

A fresh copy of the prepared `buildd` root (build-essential + apt) gets the distribution's
repositories and, in the gate, the test repositories of the changes ahead (pinned above the
distribution: a build dependency built by a change ahead comes from that change); apt resolves and
installs the build dependencies (`apt-get build-dep` of the unpacked tree), and dpkg-buildpackage
runs inside the root. The build node needs mmdebstrap to make the root, never the package's build
dependencies. What the root held is recorded as OUT/build-deb.lock.

Standard library only: uploaded with pkgtool.py to build nodes.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pkg_common import StepFailed, interesting, say
from pkg_roots import (
    Distribution,
    ExtraRepo,
    apt_update,
    dpkg_lock,
    fresh_copy,
    in_root,
    lock_diff,
    prepare_root,
    unmet_names,
    write_sources,
)

if TYPE_CHECKING:
    from pkg_build import Artifact


@dataclass
class CleanRoot:
    """How to make the roots: from the command line (pkg_roots.add_distribution_args)."""

    dist: Distribution
    roots: Path
    max_age: float
    extra: Sequence[ExtraRepo] = ()
    build_include: Sequence[str] = ()  # preinstalled in the prepared build root


def source_name(tree: Path) -> str:
    changelog = tree / "debian" / "changelog"
    first = changelog.read_text(errors="replace").split("\n", 1)[0] if changelog.is_file() else ""
    m = re.match(r"^([a-z0-9][a-z0-9.+-]+) ", first)
    return m.group(1) if m else tree.name


def build_deb_in_root(src: Path, out: Path, scratch: Path, exclude: Sequence[Path],
                      clean: CleanRoot) -> list[Artifact]:
    from pkg_build import collect_changes, copy_tree  # pkg_build imports this module

    log_path = out / "build-deb.log"
    with log_path.open("w") as log:
        say(f"=== build deb from {src} in a clean {clean.dist.codename} root "
            f"(log: {log_path}) ===", log)
        prepared = prepare_root(clean.dist, "buildd", clean.build_include, clean.roots,
                                clean.max_age)
        say(f"base root: {prepared.describe()}", log)
        root = scratch / "root"
        fresh_copy(prepared, root)
        name = src.name or "src"
        tree = root / "build" / name
        copy_tree(src, tree, exclude)
        sources = write_sources(root, clean.dist, clean.extra)
        say("APT sources of the build root:\n" + sources, log)
        for repo in clean.extra:
            say(f"  test repository {repo.url} pinned above the distribution "
                f"(label {repo.label or 'none'})", log)
        apt_update(root, log)
        deps = in_root(root, ["apt-get", "build-dep", "-y", "--no-install-recommends",
                              f"/build/{name}"], log=log)
        if not deps.ok:
            names = unmet_names(deps.output)
            where = f"the distribution ({clean.dist.mirror} {clean.dist.codename})" + (
                " or the test repositories of the changes ahead" if clean.extra else "")
            if names:
                raise StepFailed(
                    f"build dependencies of {src / 'debian/control'} cannot be installed: "
                    f"{', '.join(names)}: not available from {where}. Fix Build-Depends in "
                    "debian/control, or get the package into the distribution first")
            hints = interesting(deps.output, [r"^E: ", r"Depends:", r"unmet"])
            raise StepFailed(f"apt-get build-dep failed for {src} (exit {deps.returncode})"
                             + "".join(f"\n  {h}" for h in hints))
        record_lock(root, out, prepared.lock, clean.roots, source_name(tree), log)
        result = in_root(root, ["sh", "-c", f"cd /build/{name} && dpkg-buildpackage -us -uc -b"],
                         log=log)
        if not result.ok:
            hints = interesting(result.output, [r"error", r"Error", r"\*\*\*"])
            raise StepFailed(
                f"dpkg-buildpackage failed for {src} in the clean root (exit "
                f"{result.returncode}); full log: {log_path}"
                + ("\n  " + "\n  ".join(hints) if hints else ""))
    artifacts = collect_changes(root / "build", out, log_path)
    shutil.rmtree(root, ignore_errors=True)
    return artifacts


def record_lock(root: Path, out: Path, base_lock: str, roots: Path, source: str,
                log: TextIO | None) -> None:
    """OUT/build-deb.lock: every package version the build root held; the log shows what was
    installed for this build and what changed since this node last built the same source."""
    lock = dpkg_lock(root)
    (out / "build-deb.lock").write_text(lock)
    added = lock_diff(base_lock, lock)
    say(f"build dependencies installed: {len(added)} package(s) "
        f"(all versions: {out / 'build-deb.lock'})", log)
    for line in added:
        say(f"  {line}", log)
    last = roots / "last-builds" / f"{source}.lock"
    if last.is_file():
        changed = lock_diff(last.read_text(), lock)
        say(f"changed since the last build of {source} on this node: "
            f"{len(changed) or 'nothing'}", log)
        for line in changed:
            say(f"  {line}", log)
    last.parent.mkdir(parents=True, exist_ok=True)
    last.write_text(lock)
