"""pkgtool install-test: each package, one at a time, installed, smoke-tested, removed in a
fresh root, and the root compared with its state before."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pkg_roots import require_root

if TYPE_CHECKING:
    from pkg_cleanbuild import CleanRoot
from pkg_common import (
    PROG,
    Result,
    StepFailed,
    UsageError,
    fetch,
    require_tools,
    run,
    say,
    sha256_file,
)
from pkg_hostbase import ROOT_PATH

Snapshot = dict[str, tuple]


def snapshot(root: Path, ignored: Sequence[str]) -> Snapshot:
    """Every path in the root with its type, mode and content (sha256) or link target."""
    entries: Snapshot = {}
    ignored_set = set(ignored)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        keep = []
        for name in dirnames:
            rel = rel_dir + name
            if rel in ignored_set:
                continue
            path = Path(dirpath, name)
            if path.is_symlink():
                entries[rel] = ("link", os.readlink(path))
            else:
                entries[rel] = ("dir", stat.S_IMODE(path.lstat().st_mode))
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            rel = rel_dir + name
            if rel in ignored_set:
                continue
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ("link", os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                entries[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, sha256_file(path))
            else:
                entries[rel] = ("special", st.st_mode)
    return entries


def compare_snapshots(before: Snapshot, after: Snapshot) -> list[str]:
    problems = []
    for path in sorted(set(after) - set(before)):
        problems.append(f"left behind: /{path}")
    for path in sorted(set(before) - set(after)):
        problems.append(f"removed (was there before the install): /{path}")
    for path in sorted(set(before) & set(after)):
        if before[path] != after[path]:
            problems.append(f"changed: /{path} {before[path][:3]} -> {after[path][:3]}")
    return problems


@dataclass
class RepoSource:
    base: str  # URL of REPO (http(s):// or file://), no trailing slash
    description: dict

    def url(self, *parts: str) -> str:
        return "/".join([self.base, *parts])



def open_repo(repo: str) -> RepoSource:
    if re.match(r"^https?://", repo):
        base = repo.rstrip("/")
    elif repo.startswith("file://"):
        base = repo.rstrip("/")
    elif "://" in repo:
        raise UsageError(
            f"install-test: unsupported URL {repo!r}; use http(s)://, file:// or a directory"
        )
    else:
        path = Path(repo).resolve()
        if not path.is_dir():
            raise UsageError(f"install-test: test repository {repo!r} is not a directory")
        base = path.as_uri()
    try:
        description = json.loads(fetch(base + "/repo.json"))
    except (OSError, urllib.error.URLError) as exc:
        raise UsageError(
            f"install-test: cannot read {base}/repo.json ({exc}); REPO must be a directory or "
            f"URL made by `{PROG} test-repo`"
        ) from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"install-test: {base}/repo.json is not valid JSON: {exc}") from exc
    if not isinstance(description, dict):
        raise UsageError(f"install-test: {base}/repo.json is not a pkgtool repo.json")
    return RepoSource(base, description)



@dataclass
class Package:
    name: str
    version: str
    arch: str

    @property
    def label(self) -> str:
        return f"{self.name} {self.version} ({self.arch})"


@dataclass
class Outcome:
    package: Package
    problems: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)


def compare_with_description(info: dict, packages: list[Package], where: str) -> None:
    listed = {(p["name"], p["version"]) for p in info.get("packages", [])}
    indexed = {(p.name, p.version) for p in packages}
    missing = sorted(listed - indexed)
    if missing:
        names = ", ".join(f"{n} {v}" for n, v in missing)
        raise StepFailed(f"repo.json lists packages missing from the index at {where}: {names}")


class Installer:
    """One isolated root per package: base, package manager pointed at the test repo only."""

    fmt = ""
    ignored: list[str] = []

    def __init__(self, source: RepoSource, work: Path, prefix: list[str]) -> None:
        self.source = source
        self.info: dict = source.description[self.fmt]
        self.repo_url = source.url(self.info["path"])
        self.work = work
        self.prefix = prefix  # [] as root, or unshare --map-root-user
        self.base_pkg: Path | None = None

    def in_root_command(self, root: Path, cmd: Sequence[str]) -> list[str]:
        """`cmd` run inside the root (the smoke script)."""
        return [*self.prefix, shutil.which("chroot") or "/usr/sbin/chroot", str(root), *cmd]

    def after_install(self, root: Path, pkg: Package) -> None:
        """Hook after a successful install (clean roots record their lock file)."""

    def sh(self, cmd: Sequence[str], env: Mapping[str, str] | None = None) -> Result:
        """Run a command that needs root (for chroot): directly, or in a user namespace."""
        return run([*self.prefix, *cmd], env=env)

    def packages(self) -> list[Package]:
        raise NotImplementedError

    def prepare(self, root: Path) -> None:
        raise NotImplementedError

    def install(self, root: Path, pkg: Package) -> list[str]:
        raise NotImplementedError

    def remove(self, root: Path, pkg: Package) -> list[str]:
        raise NotImplementedError

    def installed_others(self, root: Path) -> list[str]:
        raise NotImplementedError

    def make_root(self, root: Path) -> None:
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        self.prepare(root)
        dev = root / "dev"
        dev.mkdir(exist_ok=True)
        if os.geteuid() == 0 and not (dev / "null").exists():
            os.mknod(dev / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            (dev / "null").chmod(0o666)


def privilege_prefix() -> list[str]:
    """Commands that chroot need root: real root, or root in a new user namespace."""
    if os.geteuid() == 0:
        return []
    require_tools("unshare")
    probe = subprocess.run(
        ["unshare", "--map-root-user", "true"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        raise UsageError(
            "install-test: needs root, or unprivileged user namespaces "
            f"(`unshare --map-root-user` failed: {probe.stderr.strip()}); run it as root"
        )
    return [shutil.which("unshare") or "unshare", "--map-root-user"]


def run_smoke(
    installer: Installer, root: Path, pkg: Package, script: Path, timeout: float
) -> list[str]:
    smoke_dir = root / "tmp/lockmaster-smoke"
    smoke_dir.mkdir(parents=True, exist_ok=True)
    target = smoke_dir / script.name
    shutil.copyfile(script, target)
    target.chmod(0o755)
    env = {
        "PATH": ROOT_PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "LOCKMASTER_INSTALL_ROOT": "/",
        "LOCKMASTER_PACKAGE": pkg.name,
        "LOCKMASTER_PACKAGE_VERSION": pkg.version,
        "LOCKMASTER_PACKAGE_ARCH": pkg.arch,
        "LOCKMASTER_PACKAGE_FORMAT": installer.fmt,
    }
    result = run(
        installer.in_root_command(root, [f"/tmp/lockmaster-smoke/{script.name}"]),
        env=env,
        timeout=timeout,
    )
    shutil.rmtree(smoke_dir, ignore_errors=True)
    if result.returncode == 124:
        return [f"smoke script {script} timed out after {timeout:g} s"]
    if not result.ok:
        return [f"smoke script {script} failed (exit {result.returncode})"]
    return []


def check_package(
    installer: Installer, pkg: Package, smoke_dir: Path | None, timeout: float
) -> tuple[Outcome, Path]:
    outcome = Outcome(pkg)
    root = installer.work / "roots" / re.sub(r"[^A-Za-z0-9._+-]", "_", f"{pkg.name}_{pkg.arch}")
    say(f"\n=== {installer.fmt} {pkg.label}: isolated root {root} ===")
    installer.make_root(root)
    before = snapshot(root, installer.ignored)
    say(f"--- install {pkg.label} ---")
    problems = installer.install(root, pkg)
    if problems:
        outcome.problems += problems
        return outcome, root
    outcome.steps.append("installed")
    installer.after_install(root, pkg)
    script = smoke_dir / f"{pkg.name}.sh" if smoke_dir else None
    if script is not None and script.is_file():
        say(f"--- smoke {script} (inside the root) ---")
        outcome.problems += run_smoke(installer, root, pkg, script, timeout)
        outcome.steps.append("smoke tested")
    elif smoke_dir is not None:
        say(f"--- no smoke script {script}: install and removal only ---")
    say(f"--- remove {pkg.label} ---")
    removal = installer.remove(root, pkg)
    outcome.problems += removal
    if removal:
        return outcome, root
    outcome.steps.append("removed")
    say("--- compare the root with its state before the install ---")
    others = installer.installed_others(root)
    if others:
        outcome.problems.append("packages still installed after removal: " + ", ".join(others))
    diff = compare_snapshots(before, snapshot(root, installer.ignored))
    if diff:
        shown = diff[:25] + ([f"... and {len(diff) - 25} more"] if len(diff) > 25 else [])
        outcome.problems.append(
            f"the root is not clean after removal ({len(diff)} difference(s)):"
            + "".join(f"\n      {d}" for d in shown)
        )
    else:
        outcome.steps.append("nothing left behind")
    return outcome, root


def brief(problem: str) -> str:
    """A problem's first line, plus its first detail line."""
    lines = [line.strip() for line in problem.splitlines() if line.strip()]
    return lines[0].rstrip(":") + (f": {lines[1]}" if len(lines) > 1 else "")


def cmd_install_test(args: argparse.Namespace) -> int:
    if args.format == "auto":  # every format the test repository has, one after the other
        formats = sorted(open_repo(args.repo).description)
        if not formats:
            raise UsageError(f"install-test: the test repository {args.repo} has no packages")
        for fmt in formats:
            cmd_install_test(argparse.Namespace(**{**vars(args), "format": fmt}))
        return 0
    fmt = args.format
    smoke_dir = Path(args.smoke_dir).resolve() if args.smoke_dir else None
    if smoke_dir is not None and not smoke_dir.is_dir():
        raise UsageError(f"install-test: --smoke-dir {args.smoke_dir!r} is not a directory")
    if args.smoke_timeout <= 0:
        raise UsageError("install-test: --smoke-timeout must be positive")
    source = open_repo(args.repo)
    if fmt not in source.description:
        raise UsageError(
            f"install-test: the test repository at {source.base} has no {fmt} repository "
            f"(repo.json has: {', '.join(source.description) or 'nothing'})"
        )
    from pkg_build import clean_root_from_args

    clean = clean_root_from_args(args, "install-test") if fmt == "deb" else None
    if clean is not None:
        require_root("install-test")
    prefix = privilege_prefix()
    require_tools("chroot")
    own_work = args.work is None
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="pkgtool-it-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        install_test(source, fmt, work, prefix, smoke_dir, args.smoke_timeout, clean)
    except UsageError:
        if own_work:  # a rejected input leaves nothing behind
            shutil.rmtree(work, ignore_errors=True)
        raise
    if own_work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def install_test(
    source: RepoSource,
    fmt: str,
    work: Path,
    prefix: list[str],
    smoke_dir: Path | None,
    smoke_timeout: float,
    clean: CleanRoot | None = None,
) -> None:
    # Imported here: they build on Installer, above.
    from pkg_distinstall import DistDebInstaller
    from pkg_installers import DebInstaller, RpmInstaller

    installer: Installer
    if fmt == "deb" and clean is not None:
        installer = DistDebInstaller(source, work, prefix, clean)
    else:
        installer = (DebInstaller if fmt == "deb" else RpmInstaller)(source, work, prefix)
    packages = installer.packages()
    if not packages:
        raise UsageError(f"install-test: the {fmt} test repository at {source.base} is empty")
    say(f"install-test: {len(packages)} {fmt} package(s) from {installer.repo_url}, work in {work}")
    outcomes: list[Outcome] = []
    for pkg in packages:
        outcome, root = check_package(installer, pkg, smoke_dir, smoke_timeout)
        outcomes.append(outcome)
        if outcome.problems:
            say(f"root kept for inspection: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    say(f"\n=== install-test summary ({fmt}) ===")
    failed = [o for o in outcomes if o.problems]
    for o in outcomes:
        if o.problems:
            say(f"FAILED {o.package.label}:")
            for problem in o.problems:
                say(f"    {problem}")
        else:
            say(f"ok     {o.package.label}: {', '.join(o.steps)}")
    if failed:
        raise StepFailed(
            f"install-test failed for {len(failed)} of {len(outcomes)} package(s): "
            + "; ".join(f"{o.package.name} ({brief(o.problems[0])})" for o in failed)
            + f". Work directory kept: {work}"
        )
