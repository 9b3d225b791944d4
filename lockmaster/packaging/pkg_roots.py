"""Roots of the target distribution: prepared ahead of time with mmdebstrap, reused, copied fresh
for every build and install test, and entered with chroot.

A prepared root is keyed by what went into it: the APT sources, the variant, the extra
packages and the distribution's package indexes (the SHA256 of each `Packages` file its Release
lists). So it is remade when the distribution changes, and also when it is older than max-age (a
periodic refresh; seed 003: "prepared ahead of time and kept ready for immediate use"). Every
root records the exact versions it holds (a lock file), and a refresh prints what changed.

Standard library only: uploaded with pkgtool.py to build nodes.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from pkg_common import Result, StepFailed, UsageError, fetch, host_deb_arch, require_tools, run, say

ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VARIANTS = ("buildd", "minbase")
SOURCES_FILE = "etc/apt/sources.list.d/lockmaster.list"
PREFERENCES_FILE = "etc/apt/preferences.d/lockmaster"
APT_CONF_FILE = "etc/apt/apt.conf.d/90lockmaster"
# The label test repositories carry (pkg_repo.py): how apt pins them above the distribution.
TEST_REPO_LABEL = "lockmaster-test"


@dataclass(frozen=True)
class Distribution:
    """The target distribution's APT repositories."""

    mirror: str
    codename: str
    suites: tuple[str, ...] = ()  # besides the codename (e.g. bookworm-updates)
    components: tuple[str, ...] = ("main",)
    keyring: Path | None = None  # None: trusted without a signature (a local repository)

    def all_suites(self) -> list[str]:
        return [self.codename, *self.suites]

    def source_lines(self, keyring: str | None = None) -> list[str]:
        """Its sources.list lines; `keyring`: where the root sees the keyring."""
        signed_by = keyring or self.keyring
        options = f"[signed-by={signed_by}]" if signed_by else "[trusted=yes]"
        comps = " ".join(self.components)
        return [f"deb {options} {self.mirror} {suite} {comps}" for suite in self.all_suites()]


def add_distribution_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "target distribution (clean roots; without --distribution: the node's own tools)")
    g.add_argument("--distribution", metavar="URL",
                   help="the distribution's APT mirror, e.g. http://deb.debian.org/debian")
    g.add_argument("--codename", metavar="CODENAME", help="e.g. bookworm")
    g.add_argument("--suite", action="append", default=[], metavar="SUITE",
                   help="another suite of the mirror (repeatable), e.g. bookworm-updates")
    g.add_argument("--dist-component", action="append", default=[], metavar="COMPONENT",
                   help="component of the mirror (repeatable; default: main)")
    g.add_argument("--keyring", metavar="FILE",
                   help="keyring the mirror is signed with (default: trusted, unsigned)")
    g.add_argument("--roots", metavar="DIR",
                   help="where prepared roots are kept (default: $LOCKMASTER_ROOTS, or "
                        "/var/cache/lockmaster/roots as root, ~/.cache/lockmaster/roots)")
    g.add_argument("--max-age", type=float, default=86400.0, metavar="SECONDS",
                   help="remake a prepared root older than this (default: 86400)")
    g.add_argument("--build-include", action="append", default=[], metavar="PACKAGE",
                   help="preinstalled in the build root (repeatable), e.g. debhelper")


def distribution_from_args(args: argparse.Namespace, command: str) -> Distribution | None:
    if not getattr(args, "distribution", None):
        return None
    if not re.match(r"^https?://[^/]", args.distribution):
        raise UsageError(f"{command}: --distribution {args.distribution!r} is not an http(s) "
                         "URL of an APT repository (e.g. http://deb.debian.org/debian)")
    if not args.codename:
        raise UsageError(f"{command}: --distribution needs --codename (e.g. bookworm)")
    keyring = Path(args.keyring).resolve() if args.keyring else None
    if keyring is not None and not keyring.is_file():
        raise UsageError(f"{command}: --keyring {args.keyring!r} is not a file")
    if args.max_age <= 0:
        raise UsageError(f"{command}: --max-age must be positive")
    return Distribution(args.distribution.rstrip("/"), args.codename, tuple(args.suite),
                        tuple(args.dist_component) or ("main",), keyring)


def roots_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "roots", None):
        return Path(args.roots).resolve()
    if os.environ.get("LOCKMASTER_ROOTS"):
        return Path(os.environ["LOCKMASTER_ROOTS"]).resolve()
    if os.geteuid() == 0:
        return Path("/var/cache/lockmaster/roots")
    return Path.home() / ".cache/lockmaster/roots"


def require_root(command: str) -> None:
    """Clean roots are entered with chroot and get /proc mounted: that needs root on the node
    (single-use build VMs give it; lockmaster's local nodes run as the worker's user)."""
    if os.geteuid() != 0:
        raise UsageError(
            f"{command}: building and install-testing in clean roots of the distribution needs "
            "root on the build node (chroot, mounts); run the job's node as root, or drop "
            "packaging.distribution from lockmaster.yaml to use the node's own tools")
    require_tools("mmdebstrap", "unshare", "chroot", "dpkg-query")


# --------------------------------------------------------------------------------------------
# the distribution's identity: what its package indexes are now


def index_fingerprint(dist: Distribution, arch: str) -> str:
    """A hash of the SHA256 of every Packages index of the configured suites and components
    (from each suite's Release): it changes exactly when the distribution's packages do."""
    lines: list[str] = []
    for suite in dist.all_suites():
        url = f"{dist.mirror}/dists/{suite}/Release"
        try:
            text = fetch(url).decode("utf-8", "replace")
        except (OSError, urllib.error.URLError) as exc:
            raise StepFailed(
                f"cannot read the distribution's {url} ({exc}): is the mirror (or the package "
                "cache in front of it) up, and is the suite right?") from exc
        in_sha = False
        for line in text.splitlines():
            if line.startswith("SHA256:"):
                in_sha = True
                continue
            if in_sha and not line.startswith(" "):
                in_sha = False
            if in_sha:
                parts = line.split()
                if len(parts) == 3 and any(
                        parts[2].startswith(f"{c}/binary-{a}/Packages")
                        for c in dist.components for a in (arch, "all")):
                    lines.append(f"{suite} {parts[2]} {parts[0]}")
        if not any(line.startswith(f"{suite} ") for line in lines):
            raise StepFailed(f"{url} lists no Packages index for components "
                             f"{', '.join(dist.components)} and architecture {arch}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# lock files: the exact versions in a root


def dpkg_lock(root: Path) -> str:
    proc = subprocess.run(
        ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
         "-f=${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n"],
        capture_output=True, text=True, check=False)  # fmt: skip
    rows = sorted(line.split("\t", 1)[1] for line in proc.stdout.splitlines()
                  if line.startswith("ii"))
    return "".join(row + "\n" for row in rows)


def parse_lock(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            out[f"{parts[0]}:{parts[2]}"] = parts[1]
    return out


def lock_diff(old: str, new: str) -> list[str]:
    """What changed between two lock files, one line per package."""
    before, after = parse_lock(old), parse_lock(new)
    lines = []
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        if a is None:
            lines.append(f"+ {key} {b}")
        elif b is None:
            lines.append(f"- {key} {a}")
        else:
            lines.append(f"~ {key} {a} -> {b}")
    return lines


# --------------------------------------------------------------------------------------------
# prepared roots


@dataclass
class PreparedRoot:
    path: Path  # the root directory (never modified after it is ready)
    key: str
    lock: str  # its lock file's text
    prepared_at: float
    made_now: bool
    home: Path = field(repr=False, default=Path())

    def describe(self) -> str:
        age = max(0.0, time.time() - self.prepared_at)
        how = "prepared now" if self.made_now else f"prepared {age / 60:.0f} min ago, reused"
        return f"{self.home.name} ({how}; {len(parse_lock(self.lock))} packages)"


@contextlib.contextmanager
def locked(path: Path, exclusive: bool) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare_root(dist: Distribution, variant: str, include: Sequence[str], roots: Path,
                 max_age: float) -> PreparedRoot:
    """The prepared root for (distribution, variant, include): reused while its distribution
    has not changed and it is younger than max_age, else made with mmdebstrap."""
    arch = host_deb_arch()
    # Content-addressed: the same packages make the same root, whichever URL served them
    # (the cache's or the mirror's); the root's sources are written anew for each use.
    spec = {"suites": dist.all_suites(), "components": list(dist.components),
            "keyring": str(dist.keyring or ""), "variant": variant, "include": sorted(include),
            "arch": arch, "indexes": index_fingerprint(dist, arch)}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    # Roots of one family replace each other on refresh; other extra packages, another family.
    extras = hashlib.sha256(" ".join(sorted(include)).encode()).hexdigest()[:6]
    family = f"{dist.codename}-{arch}-{variant}" + (f"-{extras}" if include else "")
    home = roots / f"{family}-{key}"
    with locked(roots / f".{family}.lock", exclusive=True):
        meta_file = home / "meta.json"
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            if time.time() - float(meta["prepared_at"]) < max_age:
                return PreparedRoot(home / "root", key, (home / "packages.lock").read_text(),
                                    float(meta["prepared_at"]), False, home)
            say(f"prepared root {home.name} is older than {max_age:g} s: remaking it")
        previous = sorted((p for p in roots.glob(f"{family}-*/meta.json")
                           if p.parent.name.rsplit("-", 1)[0] == family),
                          key=lambda p: p.stat().st_mtime)
        made = make_root(dist, variant, include, home, spec)
        if previous:
            old_lock = previous[-1].with_name("packages.lock")
            changes = lock_diff(old_lock.read_text() if old_lock.is_file() else "", made.lock)
            say(f"what changed since the previous {family} root "
                f"({previous[-1].parent.name}): {len(changes)} package(s)")
            for line in changes:
                say(f"  {line}")
        for meta in previous:  # older roots of this family: copies hold the family's lock
            if meta.parent != home:
                shutil.rmtree(meta.parent, ignore_errors=True)
        return made


def make_root(dist: Distribution, variant: str, include: Sequence[str], home: Path,
              spec: Mapping[str, object]) -> PreparedRoot:
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    root = home / "root"
    cmd = ["mmdebstrap", "--mode=root", f"--variant={variant}", "--format=directory",
           "--aptopt=Acquire::Retries \"3\"", "--aptopt=APT::Install-Recommends \"false\""]
    # apt always: builds and install tests run it inside the root (a repository whose
    # Packages index keeps the .debs' own priorities has apt as "important", not in minbase).
    cmd.append("--include=" + ",".join(["apt", *include]))
    cmd += [dist.codename, str(root), *dist.source_lines()]
    say(f"=== preparing a {variant} root of {dist.codename} from {dist.mirror} ===")
    result = run(cmd, env=mmdebstrap_env())
    if not result.ok:
        shutil.rmtree(home, ignore_errors=True)
        raise StepFailed(f"mmdebstrap could not make a {variant} root of {dist.codename} from "
                         f"{dist.mirror} (exit {result.returncode}; output above)")
    # The sources the root was made with are replaced per build/test (write_sources).
    for leftover in ("etc/apt/sources.list", SOURCES_FILE):
        (root / leftover).unlink(missing_ok=True)
    lock = dpkg_lock(root)
    (home / "packages.lock").write_text(lock)
    now = time.time()
    (home / "meta.json").write_text(json.dumps({**spec, "prepared_at": now}, indent=2) + "\n")
    say(f"prepared root {home} ({len(parse_lock(lock))} packages)")
    return PreparedRoot(root, home.name.rsplit("-", 1)[-1], lock, now, True, home)


def mmdebstrap_env() -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME")
    env = {k: v for k, v in os.environ.items() if k in keep or k.lower().endswith("_proxy")}
    env.setdefault("PATH", ROOT_PATH)
    return env


def fresh_copy(prepared: PreparedRoot, dest: Path) -> None:
    """A private, writable copy of a prepared root (`cp -a`: ~1-2 s for a build root; the
    prepared root is never written to)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    family = prepared.home.name.rsplit("-", 1)[0]
    with locked(prepared.home.parent / f".{family}.lock", exclusive=False):
        result = subprocess.run(["cp", "-a", "--reflink=auto", str(prepared.path), str(dest)],
                                capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StepFailed(f"cannot copy the prepared root {prepared.path} to {dest}: "
                         f"{result.stderr.strip()}")
    resolv = Path("/etc/resolv.conf")
    if resolv.is_file():
        with contextlib.suppress(OSError):
            shutil.copyfile(resolv, dest / "etc/resolv.conf")


# --------------------------------------------------------------------------------------------
# inside a root


def chroot_command(root: Path, cmd: Sequence[str]) -> list[str]:
    """`cmd` run inside `root`, with /proc mounted in a private mount namespace (it vanishes
    with the command: nothing stays mounted on the node, even after a kill)."""
    script = 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--fork", "--",
            "sh", "-c", script, str(root), *cmd]


def chroot_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": ROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TMPDIR": "/tmp",
           "DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}
    env.update(extra or {})
    return env


def in_root(root: Path, cmd: Sequence[str], *, log: TextIO | None = None,
            env: Mapping[str, str] | None = None, timeout: float | None = None) -> Result:
    return run(chroot_command(root, cmd), env=chroot_env(env), log=log,
               timeout=timeout)


@dataclass
class ExtraRepo:
    """A test repository (this change's, or one of a change ahead) visible in a root."""

    url: str  # the APT repository: .../deb
    codename: str
    component: str
    label: str | None  # its Release's Label (pkg_repo.py gives each a unique one)


def write_sources(root: Path, dist: Distribution, extra: Sequence[ExtraRepo]) -> str:
    """The root's only APT sources: the distribution, and the test repositories pinned above
    it (nearest first: this change's, then the changes ahead), so a package a test repository
    has always comes from there, even at a lower version than the distribution's."""
    keyring = None
    if dist.keyring is not None:  # the root cannot see the node's files: a copy inside it
        keyring = "/etc/apt/keyrings/lockmaster-distribution.gpg"
        (root / keyring[1:]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dist.keyring, root / keyring[1:])
    lines = ["# lockmaster: the target distribution", *dist.source_lines(keyring)]
    prefs = []
    for n, repo in enumerate(extra):
        lines.append(f"# test repository {n + 1}")
        lines.append(f"deb [trusted=yes] {repo.url} {repo.codename} {repo.component}")
        host = re.sub(r"^[a-z]+://([^/:]+).*$", r"\1", repo.url)
        pin = f"release l={repo.label}" if repo.label else f'origin "{host}"'
        prefs.append(f"Explanation: test repository {repo.url}\nPackage: *\nPin: {pin}\n"
                     f"Pin-Priority: {1100 - n}\n")
    (root / APT_CONF_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / APT_CONF_FILE).write_text(
        # No pty in the root (no /dev/pts mounted): dpkg's log needs none.
        'Dpkg::Use-Pty "0";\nAPT::Install-Recommends "false";\nAcquire::Languages "none";\n'
        'Acquire::Retries "3";\n')
    (root / SOURCES_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / SOURCES_FILE).write_text("\n".join(lines) + "\n")
    (root / PREFERENCES_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / PREFERENCES_FILE).write_text("\n".join(prefs))
    return "\n".join(lines)


def release_label(repo_url: str, codename: str) -> str | None:
    """The Label of an APT repository's Release file (how its pin finds it), if it has one."""
    try:
        release = fetch(f"{repo_url}/dists/{codename}/Release").decode("utf-8", "replace")
    except (OSError, urllib.error.URLError):
        return None
    return next((line.split(":", 1)[1].strip() for line in release.splitlines()
                 if line.startswith("Label:")), None)


def extra_repos(urls: Sequence[str], command: str) -> list[ExtraRepo]:
    """Test repositories given as the URL of a `test-repo` directory (with repo.json), as
    `artifact-url repo --all` prints them."""
    found = []
    for url in urls:
        if not re.match(r"^https?://", url):
            raise UsageError(f"{command}: --extra-repo {url!r}: give the http(s) URL of a test "
                             "repository (`artifact-url repo --all` prints them)")
        base = url.rstrip("/")
        try:
            info = json.loads(fetch(base + "/repo.json")).get("deb")
        except (OSError, urllib.error.URLError, json.JSONDecodeError, AttributeError) as exc:
            raise UsageError(f"{command}: cannot read {base}/repo.json ({exc})") from exc
        if not info:
            continue  # an RPM-only test repository: nothing for an APT root
        repo_url = f"{base}/{info['path']}"
        found.append(ExtraRepo(repo_url, info["codename"], info["component"],
                               release_label(repo_url, info["codename"])))
    return found


def apt_update(root: Path, log: TextIO | None = None) -> None:
    result = in_root(root, ["apt-get", "update", "-o", "Acquire::Languages=none"], log=log)
    bad = [line for line in result.lines() if re.match(r"^(E|W): ", line)]
    if not result.ok or bad:
        raise StepFailed("apt-get update failed in the root: cannot read the distribution or a "
                         "test repository" + ("".join(f"\n  {b}" for b in bad[:6])))


NOT_INSTALLABLE = re.compile(
    r"(?:Depends|PreDepends|Pre-Depends):\s*(\S+)(?:\s*\([^)]*\))?\s*but it is not "
    r"(?:installable|going to be installed)|Package '?(\S+?)'? has no installation candidate"
    r"|Unable to locate package (\S+)"
    r"|(?:Depends|Pre-Depends):\s*(\S+(?:\s*\([^)]*\))?)\s*but (?:[0-9]\S* is to be installed|"
    r"it is a virtual package)")


def unmet_names(output: str) -> list[str]:
    """The packages apt could not satisfy, by name, from its error output."""
    names: list[str] = []
    for m in NOT_INSTALLABLE.finditer(output):
        name = next(g for g in m.groups() if g)
        if name not in names:
            names.append(name)
    return names


def cmd_prepare_root(args: argparse.Namespace) -> int:
    dist = distribution_from_args(args, "prepare-root")
    if dist is None:
        raise UsageError("prepare-root: --distribution URL and --codename are required")
    require_root("prepare-root")
    variants = args.variant or list(VARIANTS)
    for variant in variants:
        include = [*args.include, *(args.build_include if variant == "buildd" else [])]
        prepared = prepare_root(dist, variant, include, roots_dir(args), args.max_age)
        say(f"{variant}: {prepared.path} — {prepared.describe()}")
    return 0


def cmd_lock_diff(args: argparse.Namespace) -> int:
    old, new = Path(args.old), Path(args.new)
    for path in (old, new):
        if not path.is_file():
            raise UsageError(f"lock-diff: {path} is not a file (a *.lock from a build or root)")
    changes = lock_diff(old.read_text(), new.read_text())
    for line in changes:
        print(line)
    if not changes:
        print(f"no differences between {old} and {new}")
    return 0
