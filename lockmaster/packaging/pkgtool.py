#!/usr/bin/env python3
"""pkgtool: the package steps of lockmaster's packaging jobs, run on a build node.

Build nodes do not have lockmaster installed: the executor uploads this one file into the job's
workspace and runs it as ``python3 pkgtool.py COMMAND ...``. It uses the Python 3 standard library
and the distribution's own packaging tools only (dpkg-dev/debhelper, rpm/rpmbuild, lintian,
rpmlint, reprepro, createrepo_c, apt/dpkg, dnf).

Commands (see docs/packaging.md):

    build SRC OUT [--format auto|deb|rpm]       binaries + logs + OUT/manifest.json
    lint OUT                                     lintian / rpmlint (shipped rpmlint config)
    test-repo OUT REPO --codename C [--component main]
                                                 per-change APT / RPM test repository + repo.json
    install-test REPO --format auto|deb|rpm [--smoke-dir DIR] [--work DIR] [--smoke-timeout S]
                                                 install, smoke-test, remove, check leftovers,
                                                 one package at a time in an isolated root
    fetch NAME DEST                              download a received build artifact (manifest)
    artifact-url NAME [--all]                    print received artifacts' URLs

Exit status: 0 success; 1 the step failed for a reason in the package (build error, lint error,
install failure, leftovers); 2 bad usage or input (the message says what, where and how to fix).
Every command pkgtool runs is echoed (``+ cmd``) with its output.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

PROG = "pkgtool.py"
MANIFEST_VERSION = 1

# The rpmlint configuration shipped with pkgtool (rpmlint 2.x TOML, passed with `rpmlint -c`).
# It is right for unsigned per-change test builds and keeps every real check on.
RPMLINT_CONFIG = """\
# rpmlint configuration shipped with lockmaster's pkgtool.py for per-change test builds.
Filters = [
    # Test builds are unsigned on purpose: packages are signed by the publisher after merge.
    'E: no-signature',
    'E: unknown-key',
    # openSUSE-only policy (Fedora and RHEL dropped these tags from their specs); not a defect.
    'E: no-packager-tag',
    'E: no-group-tag',
]
# What brp-compress produces on RPM distributions (rpmlint's upstream default is bz2).
CompressExtension = "gz"
# SPDX identifiers (and the legacy Fedora short names still seen in specs).
ValidLicenses = [
    "Apache-2.0", "MIT", "ISC", "BSD-2-Clause", "BSD-3-Clause", "MPL-2.0", "Unlicense",
    "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later",
    "LGPL-2.1-only", "LGPL-2.1-or-later", "LGPL-3.0-only", "LGPL-3.0-or-later",
    "AGPL-3.0-only", "AGPL-3.0-or-later", "CC0-1.0", "Python-2.0", "Zlib",
    "ASL 2.0", "GPLv2", "GPLv2+", "GPLv3", "GPLv3+", "LGPLv2+", "LGPLv3+", "BSD", "MPLv2.0",
]
"""

# Which distribution package provides a tool (for "not installed" messages).
TOOL_PACKAGES = {
    "dpkg-buildpackage": "dpkg-dev",
    "dpkg-checkbuilddeps": "dpkg-dev",
    "dpkg-deb": "dpkg",
    "dpkg": "dpkg",
    "dpkg-query": "dpkg",
    "apt-get": "apt",
    "rpmbuild": "rpm (Debian) / rpm-build (Fedora)",
    "rpmspec": "rpm (Debian) / rpm-build (Fedora)",
    "rpm": "rpm",
    "lintian": "lintian",
    "rpmlint": "rpmlint",
    "reprepro": "reprepro",
    "createrepo_c": "createrepo-c (Debian) / createrepo_c (Fedora)",
    "dnf": "dnf",
    "chroot": "coreutils",
    "unshare": "util-linux",
    "ldd": "libc-bin (Debian) / glibc-common (Fedora)",
    "git": "git",
}

TAR_SUFFIXES = {
    ".tar.gz": "w:gz",
    ".tgz": "w:gz",
    ".tar.bz2": "w:bz2",
    ".tbz2": "w:bz2",
    ".tar.xz": "w:xz",
    ".txz": "w:xz",
    ".tar": "w",
}

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class UsageError(Exception):
    """Bad usage or input: exit 2."""


class StepFailed(Exception):
    """The step failed for a reason in the package: exit 1."""


# --------------------------------------------------------------------------------------------
# Running commands: everything is echoed with its output.


@dataclass
class Result:
    cmd: list[str]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def lines(self) -> list[str]:
        return self.output.splitlines()


def say(message: str, log: TextIO | None = None) -> None:
    print(message, flush=True)
    if log is not None:
        log.write(message + "\n")
        log.flush()


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        hints = ", ".join(f"{t} (package {TOOL_PACKAGES.get(t, t)})" for t in missing)
        raise UsageError(f"required tools are not installed on this node: {hints}")


def run(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log: TextIO | None = None,
    timeout: float | None = None,
) -> Result:
    """Run `cmd`, echoing it and streaming its combined output to stdout (and `log`)."""
    cmd = [str(c) for c in cmd]
    say("+ " + shlex.join(cmd) + (f"    (in {cwd})" if cwd else ""), log)
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=timeout is not None,
        )
    except FileNotFoundError as exc:
        raise UsageError(
            f"cannot run {cmd[0]!r}: not installed on this node "
            f"(package {TOOL_PACKAGES.get(cmd[0], cmd[0])})"
        ) from exc
    timed_out = threading.Event()
    timer: threading.Timer | None = None
    if timeout is not None:

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
    captured: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        captured.append(line)
        say(line, log)
    rc = proc.wait()
    if timer is not None:
        timer.cancel()
    if timed_out.is_set():
        say(f"(killed after {timeout:g} s)", log)
        rc = 124
    if rc != 0:
        say(f"(exit status {rc})", log)
    return Result(cmd, rc, "\n".join(captured))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def interesting(output: str, patterns: Iterable[str], limit: int = 6) -> list[str]:
    """The lines of `output` that explain a failure (for the one-line failure messages)."""
    regex = re.compile("|".join(patterns))
    found = [line.strip() for line in output.splitlines() if regex.search(line)]
    return found[:limit]


def host_deb_arch() -> str:
    if shutil.which("dpkg"):
        proc = subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=False
        )
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "i386"}.get(machine, machine)


# --------------------------------------------------------------------------------------------
# build


@dataclass
class Artifact:
    path: Path
    fmt: str
    kind: str  # "binary" | "srpm" | "changes" | "buildinfo"


def copy_tree(src: Path, dest: Path, exclude: Sequence[Path]) -> None:
    """Copy the source tree without .git and without the output directory (if inside SRC)."""

    def ignore(dirpath: str, names: list[str]) -> set[str]:
        skipped = set()
        for name in names:
            path = Path(dirpath, name)
            if name == ".git" or any(path == e for e in exclude):
                skipped.add(name)
        return skipped

    shutil.copytree(src, dest, symlinks=True, ignore=ignore)


def git_provenance(src: Path, exclude: Sequence[Path]) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout SRC is in, or (None, None) if it is not in one."""
    if shutil.which("git") is None:
        say("note: git is not installed; source_commit is null")
        return None, None
    # We are about to run the tree's own build scripts, so trusting its repository is implied;
    # safe.directory=* keeps a checkout owned by another user from reading as "not git".
    git = ["git", "-c", "safe.directory=*", "-C", str(src)]
    inside = subprocess.run(
        [*git, "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True, check=False
    )
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        say(f"note: {src} is not in a git checkout; source_commit is null")
        return None, None
    head = run([*git, "rev-parse", "HEAD"])
    if not head.ok:
        say("note: the git checkout has no commit yet; source_commit is null")
        return None, None
    commit = head.lines()[-1].strip()
    pathspec = ["--", "."]
    for ex in exclude:
        with contextlib.suppress(ValueError):
            pathspec.append(f":(exclude){ex.relative_to(src)}")
    status = run([*git, "status", "--porcelain", "--untracked-files=normal", *pathspec])
    dirty = bool(status.output.strip()) if status.ok else None
    return commit, dirty


def parse_changes_files(changes: Path) -> list[str]:
    """File names listed in the Files: field of a .changes file."""
    names: list[str] = []
    in_files = False
    for line in changes.read_text(errors="replace").splitlines():
        if line.startswith("Files:"):
            in_files = True
            continue
        if in_files:
            if line.startswith((" ", "\t")) and line.strip():
                names.append(line.split()[-1])
            else:
                in_files = False
    return names


def build_deb(src: Path, out: Path, scratch: Path, exclude: Sequence[Path]) -> list[Artifact]:
    require_tools("dpkg-buildpackage", "dpkg-checkbuilddeps", "dpkg-deb")
    workdir = scratch / "deb"
    tree = workdir / (src.name or "src")
    copy_tree(src, tree, exclude)
    log_path = out / "build-deb.log"
    with log_path.open("w") as log:
        say(f"=== build deb from {src} (log: {log_path}) ===", log)
        deps = run(["dpkg-checkbuilddeps"], cwd=tree, log=log)
        if not deps.ok:
            unmet = [
                m.group(2).strip()
                for m in re.finditer(
                    r"(Unmet build dependencies|Build conflicts):\s*(.+)", deps.output
                )
            ]
            if unmet:
                raise StepFailed(
                    f"missing build dependencies for {src / 'debian/control'}: "
                    f"{'; '.join(unmet)}. Install them on the build node (e.g. "
                    f"`apt-get build-dep {src}` or `apt-get install <package>`), or fix "
                    f"Build-Depends in debian/control."
                )
            raise StepFailed(
                f"dpkg-checkbuilddeps failed for {src / 'debian/control'} "
                f"(exit {deps.returncode}); see {log_path}"
            )
        result = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=tree, log=log)
        if not result.ok:
            hints = interesting(result.output, [r"error", r"Error", r"\*\*\*"])
            raise StepFailed(
                f"dpkg-buildpackage failed for {src} (exit {result.returncode}); "
                f"full log: {log_path}" + ("\n  " + "\n  ".join(hints) if hints else "")
            )
    changes_files = sorted(workdir.glob("*.changes"))
    if not changes_files:
        raise StepFailed(f"dpkg-buildpackage produced no .changes file; see {log_path}")
    dest = out / "deb"
    dest.mkdir(parents=True, exist_ok=True)
    artifacts: list[Artifact] = []
    for changes in changes_files:
        for name in [*parse_changes_files(changes), changes.name]:
            source = workdir / name
            if not source.is_file():
                raise StepFailed(f"{changes.name} lists {name}, which the build did not produce")
            target = dest / name
            shutil.move(str(source), target)
            if name.endswith((".deb", ".udeb", ".ddeb")):
                kind = "binary"
            elif name.endswith(".buildinfo"):
                kind = "buildinfo"
            elif name.endswith(".changes"):
                kind = "changes"
            else:
                kind = "other"
            artifacts.append(Artifact(target, "deb", kind))
    return artifacts


def spec_sources(parsed_spec: str) -> dict[str, str]:
    """{"Source0": value, "Patch1": value, ...} from `rpmspec -P` output."""
    sources: dict[str, str] = {}
    for line in parsed_spec.splitlines():
        m = re.match(r"^(Source|Patch)(\d*)\s*:\s*(\S+)", line, re.IGNORECASE)
        if m:
            kind = m.group(1).capitalize()
            sources[f"{kind}{m.group(2) or '0'}"] = m.group(3)
    return sources


def make_tarball(tree: Path, tarball: Path) -> None:
    mode = next(m for s, m in TAR_SUFFIXES.items() if tarball.name.endswith(s))
    top = next(tarball.name[: -len(s)] for s in TAR_SUFFIXES if tarball.name.endswith(s))

    def owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    say(f"+ (python tarfile) create {tarball} with top directory {top}/ from {tree}")
    with tarfile.open(tarball, mode) as tar:  # type: ignore[call-overload]
        tar.add(tree, arcname=top, filter=owner)


def host_rpmdb_is_empty() -> bool:
    """True on a node that is not RPM-based (e.g. Debian): its rpm database is missing/empty."""
    proc = subprocess.run(
        ["rpm", "--eval", "%{_dbpath}"], capture_output=True, text=True, check=False
    )
    dbpath = Path(proc.stdout.strip() or "/var/lib/rpm")
    # Do not let `rpm -qa` create a database where there is none.
    if not dbpath.is_dir() or not any(dbpath.iterdir()):
        return True
    proc = subprocess.run(["rpm", "-qa"], capture_output=True, text=True, check=False)
    return proc.returncode != 0 or not proc.stdout.strip()


def build_rpm(
    src: Path, spec: Path, out: Path, scratch: Path, exclude: Sequence[Path]
) -> list[Artifact]:
    require_tools("rpmbuild", "rpmspec", "rpm")
    work = scratch / "rpm"
    topdir = work / "rpmbuild"
    for sub in ("SOURCES", "SPECS", "BUILD", "BUILDROOT", "RPMS", "SRPMS", "tmp"):
        (topdir / sub).mkdir(parents=True, exist_ok=True)
    defines = [
        "--define", f"_topdir {topdir}",
        "--define", f"_tmppath {topdir / 'tmp'}",
    ]  # fmt: skip
    if shutil.which("bash") and Path("/usr/lib/rpm/brp-compress").is_file():
        # Debian's rpm runs brp-compress (a bash script) with /bin/sh = dash, so man pages stay
        # uncompressed; run it with bash as RPM distributions (whose /bin/sh is bash) do.
        defines += ["--define", "__brp_compress bash %{_rpmconfigdir}/brp-compress %{?_prefix}"]
    log_path = out / "build-rpm.log"
    with log_path.open("w") as log:
        say(f"=== build rpm from {spec} (log: {log_path}) ===", log)
        parsed = run(["rpmspec", "-P", *defines, spec], log=log)
        if not parsed.ok:
            raise StepFailed(f"rpmspec cannot parse {spec} (exit {parsed.returncode}); see above")
        sources = spec_sources(parsed.output)
        tree = work / "tree"
        copy_tree(src, tree, exclude)
        for key, value in sorted(sources.items()):
            name = Path(urllib.parse.urlparse(value).path).name
            if not name:
                raise StepFailed(f"{spec.name}: cannot tell the file name of {key}: {value}")
            if (tree / name).is_file():
                shutil.copy2(tree / name, topdir / "SOURCES" / name)
                say(f"{key}: {name} copied from the source tree", log)
            elif key == "Source0" and any(name.endswith(s) for s in TAR_SUFFIXES):
                make_tarball(tree, topdir / "SOURCES" / name)
            elif key == "Source0":
                raise StepFailed(
                    f"{spec.name}: Source0 {name!r} is neither a file in {src} nor a tarball "
                    f"pkgtool can make (name it e.g. %{{name}}-%{{version}}.tar.gz)"
                )
            else:
                raise StepFailed(
                    f"{spec.name}: {key} {name!r} not found; put it next to the spec in {src}"
                )
        spec_copy = topdir / "SPECS" / spec.name
        shutil.copy2(spec, spec_copy)
        extra: list[str] = []
        if host_rpmdb_is_empty():
            brs = run(["rpmspec", "-q", "--buildrequires", *defines, spec_copy], log=log)
            unverified = ", ".join(brs.lines()) if brs.ok and brs.output.strip() else "none"
            say(
                "NOTE: this node is not an RPM-based system (its rpm database is empty), so "
                "rpmbuild cannot check BuildRequires; building with --nodeps. "
                f"Unverified BuildRequires: {unverified}",
                log,
            )
            # An empty database of our own, so rpmbuild creates none in the user's home.
            extra += ["--nodeps", "--define", f"_dbpath {work / 'rpmdb'}"]
        result = run(["rpmbuild", "-ba", *defines, *extra, spec_copy], log=log)
        if not result.ok:
            m = re.search(r"Failed build dependencies:\n((?:\s+.+\n?)+)", result.output)
            if m:
                missing = "; ".join(x.strip() for x in m.group(1).splitlines() if x.strip())
                raise StepFailed(
                    f"missing build dependencies for {spec}: {missing}. Install them on the "
                    f"build node (e.g. `dnf builddep {spec.name}`) or fix BuildRequires."
                )
            hints = interesting(result.output, [r"^error:", r"^\s*Bad exit status", r"Error"])
            raise StepFailed(
                f"rpmbuild failed for {spec} (exit {result.returncode}); full log: {log_path}"
                + ("\n  " + "\n  ".join(hints) if hints else "")
            )
    dest = out / "rpm"
    dest.mkdir(parents=True, exist_ok=True)
    artifacts: list[Artifact] = []
    for built in sorted(topdir.glob("RPMS/*/*.rpm")) + sorted(topdir.glob("SRPMS/*.rpm")):
        target = dest / built.name
        shutil.move(str(built), target)
        kind = "srpm" if built.name.endswith(".src.rpm") else "binary"
        artifacts.append(Artifact(target, "rpm", kind))
    if not any(a.kind == "binary" for a in artifacts):
        raise StepFailed(f"rpmbuild produced no binary RPM; see {log_path}")
    return artifacts


def deb_fields(path: Path, *fields: str) -> dict[str, str]:
    result = run(["dpkg-deb", "--field", path, *fields])
    if not result.ok:
        raise StepFailed(f"{path} is not a readable .deb (dpkg-deb exit {result.returncode})")
    values: dict[str, str] = {}
    for line in result.lines():
        if ":" in line and not line.startswith(" "):
            key, _, value = line.partition(":")
            values[key.strip()] = value.strip()
    return values


RPM_QF = "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\n"


def rpm_fields(path: Path) -> tuple[str, str, str]:
    result = run(["rpm", "-qp", "--nosignature", "--qf", RPM_QF, path])
    rows = [line.split("\t") for line in result.lines() if line.count("\t") == 2]
    if not result.ok or not rows:
        raise StepFailed(f"{path} is not a readable RPM (rpm exit {result.returncode})")
    name, version, arch = rows[-1]
    return name, version, arch


def manifest_entry(out: Path, artifact: Artifact) -> dict[str, object]:
    entry: dict[str, object] = {
        "file": artifact.path.relative_to(out).as_posix(),
        "format": artifact.fmt,
        "sha256": sha256_file(artifact.path),
        "size": artifact.path.stat().st_size,
    }
    if artifact.kind not in ("binary", "srpm"):
        entry["kind"] = artifact.kind
        return entry
    if artifact.fmt == "deb":
        fields = deb_fields(artifact.path, "Package", "Version", "Architecture")
        entry.update(
            name=fields.get("Package"),
            version=fields.get("Version"),
            arch=fields.get("Architecture"),
        )
    else:
        name, version, arch = rpm_fields(artifact.path)
        # A source RPM is listed as arch "src" (its file name's arch), like the publisher reads it.
        entry.update(name=name, version=version, arch="src" if artifact.kind == "srpm" else arch)
    return entry


def is_binary(entry: dict) -> bool:
    """A binary package of the manifest (not a .changes/.buildinfo, not a source RPM)."""
    return "kind" not in entry and entry.get("arch") != "src"


def cmd_build(args: argparse.Namespace) -> int:
    src = Path(args.src).resolve()
    out = Path(args.out).resolve()
    if not src.is_dir():
        raise UsageError(f"build: source tree {args.src!r} is not a directory")
    if src == out or src.is_relative_to(out):
        raise UsageError(f"build: OUT {args.out!r} must not be the source tree or contain it")
    has_deb = (src / "debian" / "control").is_file() and (src / "debian" / "rules").is_file()
    specs = sorted(src.glob("*.spec"))
    fmt = args.format
    formats: list[str] = []
    if fmt in ("auto", "deb") and has_deb:
        formats.append("deb")
    if fmt in ("auto", "rpm") and specs:
        formats.append("rpm")
    if fmt == "deb" and not has_deb:
        raise UsageError(
            f"build: --format deb, but {src} has no debian/control and debian/rules; "
            "add a debian/ directory (fully unpacked source tree) or use --format rpm"
        )
    if fmt == "rpm" and not specs:
        raise UsageError(
            f"build: --format rpm, but there is no *.spec file directly in {src}; add one "
            "or use --format deb"
        )
    if not formats:
        raise UsageError(
            f"build: {src} has neither debian/ (debian/control + debian/rules) nor a *.spec "
            "file: nothing to build"
        )
    if "rpm" in formats and len(specs) > 1:
        raise UsageError(
            f"build: several spec files in {src} ({', '.join(s.name for s in specs)}); keep one"
        )
    if "deb" in formats:
        require_tools("dpkg-buildpackage", "dpkg-checkbuilddeps", "dpkg-deb")
    if "rpm" in formats:
        require_tools("rpmbuild", "rpmspec", "rpm")
    existing = [p for p in ("deb", "rpm", "manifest.json", ".scratch") if (out / p).exists()]
    if existing:
        raise UsageError(
            f"build: {out} already holds a build ({', '.join(existing)}); use a new, empty "
            "output directory so the manifest describes exactly one build"
        )
    out.mkdir(parents=True, exist_ok=True)
    exclude = [out] if out.is_relative_to(src) else []
    scratch = out / ".scratch"
    commit, dirty = git_provenance(src, exclude)
    artifacts: list[Artifact] = []
    failures: list[str] = []
    for f in formats:
        try:
            if f == "deb":
                artifacts += build_deb(src, out, scratch, exclude)
            else:
                artifacts += build_rpm(src, specs[0], out, scratch, exclude)
        except StepFailed as exc:
            say(f"build {f}: FAILED: {exc}")
            failures.append(f"{f}: {exc}")
    if failures:
        raise StepFailed(
            "build failed (no manifest written; scratch kept in "
            f"{scratch}):\n  " + "\n  ".join(failures)
        )
    entries = [manifest_entry(out, a) for a in artifacts]
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "source_commit": commit,
        "source_dirty": dirty,
        "formats": formats,
        "packages": [e for e in entries if "kind" not in e],
        "extra_files": [e for e in entries if "kind" in e],
    }
    write_json(out / "manifest.json", manifest)
    shutil.rmtree(scratch, ignore_errors=True)
    say(f"=== built {len(manifest['packages'])} package(s) into {out} ===")
    for entry in manifest["packages"]:
        say(f"  {entry['file']}  {entry['name']} {entry['version']} {entry['arch']}")
    say(f"manifest: {out / 'manifest.json'} (source_commit: {commit})")
    return 0


# --------------------------------------------------------------------------------------------
# lint


def load_manifest(out: Path, command: str) -> dict:
    path = out / "manifest.json"
    if not path.is_file():
        raise UsageError(f"{command}: no {path}; run `{PROG} build SRC {out}` first")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{command}: {path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("packages"), list):
        raise UsageError(f"{command}: {path} is not a pkgtool manifest (no packages list)")
    return manifest


def verified_files(out: Path, manifest: dict, fmt: str, command: str) -> list[dict]:
    """Manifest entries of `fmt` whose files exist and still match their sha256."""
    entries = [
        e for e in [*manifest["packages"], *manifest.get("extra_files", [])] if e["format"] == fmt
    ]
    for entry in entries:
        path = out / entry["file"]
        if not path.is_file():
            raise UsageError(f"{command}: {path} is listed in the manifest but missing")
        if sha256_file(path) != entry["sha256"]:
            raise UsageError(
                f"{command}: {path} does not match its sha256 in {out / 'manifest.json'}; "
                "it changed after the build: rebuild"
            )
    return entries


def lint_deb(out: Path, entries: list[dict]) -> tuple[int, int]:
    require_tools("lintian")
    changes = [out / e["file"] for e in entries if e["file"].endswith(".changes")]
    targets = changes or [out / e["file"] for e in entries if e.get("kind") is None]
    say("=== lintian ===")
    result = run(["lintian", "--tag-display-limit", "0", "--fail-on", "error", *targets])
    errors = sum(1 for line in result.lines() if line.startswith("E: "))
    warnings = sum(1 for line in result.lines() if line.startswith("W: "))
    # lintian: 0 normal, 1 run-time error, 2 a --fail-on condition (an error tag) was found.
    if result.returncode not in (0, 2) or (result.returncode == 2 and errors == 0):
        raise StepFailed(f"lintian did not run properly (exit {result.returncode}); see above")
    return errors, warnings


def lint_rpm(out: Path, entries: list[dict]) -> tuple[int, int]:
    require_tools("rpmlint")
    targets = [out / e["file"] for e in entries if e["file"].endswith(".rpm")]
    with tempfile.TemporaryDirectory(prefix="pkgtool-rpmlint-") as tmp:
        config = Path(tmp) / "pkgtool-rpmlint.toml"
        config.write_text(RPMLINT_CONFIG)
        say(f"=== rpmlint (shipped configuration written to {config}) ===")
        # HOME=tmp: only the shipped configuration applies (no per-user rpmlint config), and
        # rpm, whose database on Debian is ~/.rpmdb, does not create one in the user's home.
        result = run(["rpmlint", "-c", config, *targets], env={**os.environ, "HOME": tmp})
    errors = sum(1 for line in result.lines() if re.match(r"^\S+: E: ", line))
    warnings = sum(1 for line in result.lines() if re.match(r"^\S+: W: ", line))
    if result.returncode not in (0, 64, 66) or (result.returncode != 0 and errors == 0):
        raise StepFailed(f"rpmlint did not run properly (exit {result.returncode}); see above")
    return errors, warnings


def cmd_lint(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    if not out.is_dir():
        raise UsageError(f"lint: {args.out!r} is not a directory; pass the OUT of `build`")
    manifest = load_manifest(out, "lint")
    summary: list[str] = []
    failed = False
    for fmt, linter in (("deb", lint_deb), ("rpm", lint_rpm)):
        entries = verified_files(out, manifest, fmt, "lint")
        if not entries:
            continue
        errors, warnings = linter(out, entries)
        summary.append(f"{fmt}: {errors} error(s), {warnings} warning(s)")
        failed = failed or errors > 0
    if not summary:
        raise UsageError(f"lint: the manifest in {out} lists no packages")
    say("=== lint summary: " + "; ".join(summary) + " ===")
    if failed:
        raise StepFailed("lint found errors (the E: lines above); warnings do not fail")
    return 0


# --------------------------------------------------------------------------------------------
# test-repo


def reprepro_distributions(codename: str, component: str, architectures: list[str]) -> str:
    return (
        "Origin: lockmaster\n"
        "Label: lockmaster test repository\n"
        f"Codename: {codename}\n"
        f"Architectures: {' '.join(architectures)}\n"
        f"Components: {component}\n"
        "Description: lockmaster per-change test repository (unsigned)\n"
    )


def make_deb_repo(
    out: Path, entries: list[dict], repo: Path, codename: str, component: str
) -> dict[str, object]:
    require_tools("reprepro", "dpkg-deb")
    binaries = [e for e in entries if is_binary(e)]
    architectures = sorted({host_deb_arch()} | {e["arch"] for e in binaries if e["arch"] != "all"})
    conf = repo / "conf"
    conf.mkdir(parents=True)
    (conf / "distributions").write_text(reprepro_distributions(codename, component, architectures))
    say(f"=== APT repository {repo} ({codename}/{component}, {' '.join(architectures)}) ===")
    for entry in binaries:
        path = out / entry["file"]
        fields = deb_fields(path, "Section", "Priority")
        # reprepro skips .debs without Section/Priority unless given -S/-P: pass defaults for
        # those only (-S/-P would override the package's own values).
        defaults = []
        if not fields.get("Section"):
            defaults += ["-S", "misc"]
        if not fields.get("Priority"):
            defaults += ["-P", "optional"]
        action = "includeudeb" if path.name.endswith(".udeb") else "includedeb"
        result = run(["reprepro", "-b", repo, "-C", component, *defaults, action, codename, path])
        if not result.ok:
            raise StepFailed(f"reprepro could not add {path.name} (exit {result.returncode})")
    listing = run(["reprepro", "-b", repo, "list", codename])
    present = {
        tuple(line.split(": ", 1)[1].split()[:2]) for line in listing.lines() if ": " in line
    }
    missing = [e for e in binaries if (e["name"], e["version"]) not in present]
    if missing:
        names = ", ".join(f"{e['name']} {e['version']}" for e in missing)
        raise StepFailed(f"reprepro did not index: {names}")
    return {
        "path": "deb",
        "codename": codename,
        "component": component,
        "architectures": architectures,
        "packages": [
            {k: e[k] for k in ("name", "version", "arch", "sha256")} for e in binaries
        ],
    }


def read_rpm_primary(fetch_bytes: Callable[[str], bytes], base: str) -> list[dict[str, str]]:
    """Packages in an RPM repository's primary metadata (no source packages)."""
    repo_ns = {"r": "http://linux.duke.edu/metadata/repo"}
    common = "{http://linux.duke.edu/metadata/common}"
    repomd = ET.fromstring(fetch_bytes(f"{base}/repodata/repomd.xml"))
    location = repomd.find("r:data[@type='primary']/r:location", repo_ns)
    if location is None:
        raise StepFailed(f"{base}/repodata/repomd.xml has no primary metadata")
    data = fetch_bytes(f"{base}/{location.get('href')}")
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    packages = []
    for pkg in ET.fromstring(data).iter(f"{common}package"):
        arch = pkg.findtext(f"{common}arch") or ""
        if arch == "src":
            continue
        ver = pkg.find(f"{common}version")
        assert ver is not None
        epoch = ver.get("epoch") or "0"
        version = f"{ver.get('ver')}-{ver.get('rel')}"
        packages.append(
            {
                "name": pkg.findtext(f"{common}name") or "",
                "arch": arch,
                "version": version if epoch == "0" else f"{epoch}:{version}",
            }
        )
    return packages


def make_rpm_repo(out: Path, entries: list[dict], repo: Path) -> dict[str, object]:
    require_tools("createrepo_c")
    binaries = [e for e in entries if is_binary(e)]
    repo.mkdir(parents=True)
    say(f"=== RPM repository {repo} ===")
    for entry in binaries:
        shutil.copy2(out / entry["file"], repo / Path(entry["file"]).name)
    result = run(["createrepo_c", repo])
    if not result.ok:
        raise StepFailed(f"createrepo_c failed (exit {result.returncode})")
    indexed = {
        (p["name"], p["version"])
        for p in read_rpm_primary(lambda url: Path(url).read_bytes(), str(repo))
    }
    missing = [e for e in binaries if (e["name"], e["version"]) not in indexed]
    if missing:
        raise StepFailed("createrepo_c did not index: " + ", ".join(e["name"] for e in missing))
    return {
        "path": "rpm",
        "codename": None,
        "component": None,
        "packages": [
            {k: e[k] for k in ("name", "version", "arch", "sha256")} for e in binaries
        ],
    }


def cmd_test_repo(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    repo = Path(args.repo).resolve()
    for label, value in (("--codename", args.codename), ("--component", args.component)):
        if not NAME_RE.match(value):
            raise UsageError(
                f"test-repo: {label} {value!r} is not a valid name (letters, digits, '.', '_', "
                "'+', '-'; e.g. --codename bookworm)"
            )
    if not out.is_dir():
        raise UsageError(f"test-repo: {args.out!r} is not a directory; pass the OUT of `build`")
    manifest = load_manifest(out, "test-repo")
    existing = [p for p in ("deb", "rpm", "repo.json") if (repo / p).exists()]
    if existing:
        raise UsageError(
            f"test-repo: {repo} already holds a test repository ({', '.join(existing)}); "
            "per-change repositories are made once: use a new directory"
        )
    description: dict[str, object] = {}
    for fmt in ("deb", "rpm"):
        entries = verified_files(out, manifest, fmt, "test-repo")
        if not any(is_binary(e) for e in entries):
            continue
        if fmt == "deb":
            info = make_deb_repo(out, entries, repo / "deb", args.codename, args.component)
        else:
            info = make_rpm_repo(out, entries, repo / "rpm")
        info["source_commit"] = manifest.get("source_commit")
        description[fmt] = info
    if not description:
        raise UsageError(f"test-repo: the manifest in {out} lists no packages")
    write_json(repo / "repo.json", description)
    say(f"=== test repository ready: {repo} (formats: {', '.join(description)}) ===")
    say((repo / "repo.json").read_text().rstrip())
    return 0


# --------------------------------------------------------------------------------------------
# install-test: the isolated root


# Directories every root has, owned by the base package (as base-files/filesystem do).
SKELETON_DIRS = [
    "etc", "home", "mnt", "opt", "root", "run", "srv", "tmp",
    "usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/libexec", "usr/include",
    "usr/local/bin", "usr/local/lib", "usr/local/share",
    "usr/share", "usr/share/doc", "usr/share/info", "usr/share/licenses", "usr/share/locale",
    "usr/share/man", *(f"usr/share/man/man{i}" for i in range(1, 9)),
    "var/cache", "var/lib", "var/log", "var/spool", "var/tmp",
]  # fmt: skip
USRMERGE_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
# Host programs copied into the root (with their libraries): the minimal system that package
# scripts and smoke scripts can count on. `sh` is required; missing others are skipped.
TOOLBOX = [
    "sh", "cat", "cp", "ls", "mkdir", "rm", "rmdir", "mv", "ln", "chmod", "chown", "touch",
    "grep", "sed", "head", "tail", "sort", "uniq", "wc", "cut", "tr", "env", "id", "uname",
    "basename", "dirname", "readlink", "find", "xargs", "stat", "sleep", "date", "true",
    "false", "test", "expr", "printf", "echo",
]  # fmt: skip
DEB_TOOLBOX = [
    "dpkg", "dpkg-query", "dpkg-trigger", "dpkg-divert", "dpkg-statoverride",
    "dpkg-maintscript-helper", "update-alternatives",
]  # fmt: skip
BASE_NAME = "lockmaster-installroot-base"
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Paths in the root that belong to the package manager (databases, caches, logs) or are scratch.
IGNORED_COMMON = ["tmp", "var/tmp", "dev", "proc", "sys"]
IGNORED_DEB = [
    "var/lib/dpkg", "var/lib/apt", "var/cache/apt", "var/cache/debconf", "var/log/apt",
    "var/log/dpkg.log", "var/log/alternatives.log",
]  # fmt: skip
IGNORED_RPM = [
    "var/lib/rpm", "usr/lib/sysimage/rpm", "var/lib/dnf", "var/cache/dnf", "etc/dnf/modules.d",
    "var/log/dnf.log", "var/log/dnf.librepo.log", "var/log/dnf.rpm.log", "var/log/hawkey.log",
]  # fmt: skip


def library_deps(binary: Path) -> list[Path]:
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    libs = []
    for line in proc.stdout.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def stage_base(stage: Path, fmt: str) -> list[str]:
    """Lay out the base system (skeleton, usr-merge links, toolbox + libraries) in `stage`."""
    require_tools("ldd")
    for link, target in USRMERGE_LINKS.items():
        (stage / target).mkdir(parents=True, exist_ok=True)
        (stage / link).symlink_to(target)
    for d in SKELETON_DIRS:
        (stage / d).mkdir(parents=True, exist_ok=True)
    (stage / "tmp").chmod(0o1777)
    (stage / "var/tmp").chmod(0o1777)
    (stage / "root").chmod(0o700)
    (stage / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (stage / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    copied: list[str] = []
    tools = TOOLBOX + (DEB_TOOLBOX if fmt == "deb" else [])
    for tool in tools:
        found = shutil.which(tool)
        if found is None:
            if tool == "sh":
                raise UsageError("install-test: this node has no /bin/sh to put in the root")
            continue
        host = Path(found).resolve()
        dest = stage / "usr/bin" / tool
        if dest.exists():
            continue
        shutil.copy2(host, dest)
        copied.append(tool)
        for lib in library_deps(host):
            lib_dest = stage / str(lib).lstrip("/")
            if not lib_dest.exists():
                lib_dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(lib.resolve(), lib_dest)
    return copied


def build_base_deb(work: Path, arch: str) -> Path:
    """A .deb owning the root's skeleton and toolbox, so dpkg keeps them and sees conflicts."""
    stage = work / "base-deb"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    tools = stage_base(stage, "deb")
    (stage / "DEBIAN").mkdir()
    (stage / "DEBIAN/control").write_text(
        f"Package: {BASE_NAME}\nVersion: 1\nArchitecture: {arch}\n"
        "Maintainer: lockmaster pkgtool <pkgtool@lockmaster.invalid>\n"
        "Priority: required\nSection: admin\n"
        f"Description: minimal root for pkgtool install tests\n"
        f" Directory skeleton and host tools: {' '.join(tools)}.\n"
    )
    deb = work / f"{BASE_NAME}.deb"
    result = run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", stage, deb])
    if not result.ok:
        raise UsageError("install-test: could not build the base package for the root (above)")
    return deb


def build_base_rpm(work: Path) -> Path:
    """An RPM owning the root's skeleton and toolbox and providing /bin/sh (like `filesystem`
    and `bash` do), so packages with scriptlets or shell scripts can be installed."""
    require_tools("rpmbuild")
    base = work / "base-rpm"
    if base.exists():
        shutil.rmtree(base)
    stage = base / "stage"
    stage.mkdir(parents=True)
    tools = stage_base(stage, "rpm")
    files = []
    for dirpath, dirnames, filenames in os.walk(stage):
        rel = "/" + Path(dirpath).relative_to(stage).as_posix()
        if rel != "/":
            files.append(f"%dir {rel}")
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_dir():
                files.append(f"{rel.rstrip('/')}/{name}")
    spec = base / f"{BASE_NAME}.spec"
    spec.write_text(
        f"Name: {BASE_NAME}\nVersion: 1\nRelease: 1\n"
        "Summary: minimal root for pkgtool install tests\nLicense: NONE\n"
        "AutoReqProv: no\nProvides: /bin/sh\nProvides: /usr/bin/sh\n"
        f"%description\nDirectory skeleton and host tools: {' '.join(tools)}.\n"
        f"%install\ncp -a {shlex.quote(str(stage))}/. %{{buildroot}}/\n"
        "%files\n%defattr(-,root,root,-)\n" + "\n".join(files) + "\n"
    )
    topdir = base / "rpmbuild"
    (topdir / "tmp").mkdir(parents=True)
    result = run(
        [
            "rpmbuild", "-bb", "--nodeps",
            "--define", f"_topdir {topdir}",
            "--define", f"_dbpath {base / 'rpmdb'}",
            "--define", f"_tmppath {topdir / 'tmp'}",
            "--define", "__os_install_post %{nil}",
            "--define", "debug_package %{nil}",
            "--define", "_build_id_links none",
            spec,
        ]
    )  # fmt: skip
    rpms = sorted(topdir.glob("RPMS/*/*.rpm"))
    if not result.ok or not rpms:
        raise UsageError("install-test: could not build the base package for the root (above)")
    return rpms[0]


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


def fetch(url: str) -> bytes:
    if url.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).read_bytes()
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


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


def parse_deb822(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
        elif not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


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


class DebInstaller(Installer):
    fmt = "deb"
    ignored = IGNORED_COMMON + IGNORED_DEB

    def __init__(self, source: RepoSource, work: Path, prefix: list[str]) -> None:
        super().__init__(source, work, prefix)
        require_tools("apt-get", "dpkg", "dpkg-deb", "dpkg-query")
        self.arch = host_deb_arch()

    def packages(self) -> list[Package]:
        codename, component = self.info["codename"], self.info["component"]
        rel = f"dists/{codename}/{component}/binary-{self.arch}/Packages"
        url = f"{self.repo_url}/{rel}"
        try:
            text = fetch(url).decode("utf-8", "replace")
        except (OSError, urllib.error.URLError):
            try:
                text = gzip.decompress(fetch(url + ".gz")).decode("utf-8", "replace")
            except (OSError, urllib.error.URLError) as exc:
                raise UsageError(
                    f"install-test: no APT index for this node's architecture {self.arch} at "
                    f"{url} ({exc}); the repository was made for "
                    f"{', '.join(self.info.get('architectures', []))}"
                ) from exc
        pkgs = [
            Package(s["Package"], s["Version"], s.get("Architecture", ""))
            for s in parse_deb822(text)
            if "Package" in s and "Version" in s
        ]
        compare_with_description(self.info, pkgs, url)
        return sorted(pkgs, key=lambda p: (p.name, p.version))

    def apt_env(self, root: Path) -> dict[str, str]:
        conf = self.work / f"apt-{root.name}.conf"
        r = str(root)
        conf.write_text(
            # APT_CONFIG replaces the host's configuration: the host's apt.conf.d, sources and
            # state are never read; Dir points every other apt path into the root.
            f'Dir "{r}/";\n'
            f'Dir::State::status "{r}/var/lib/dpkg/status";\n'
            f'Dir::Etc::TrustedParts "{r}/etc/apt/trusted.gpg.d";\n'
            f'APT::Architecture "{self.arch}";\n'
            f'APT::Architectures {{ "{self.arch}"; }};\n'
            'APT::Sandbox::User "root";\n'
            'APT::Install-Recommends "false";\n'
            'APT::Install-Suggests "false";\n'
            'APT::Get::Assume-Yes "true";\n'
            'Acquire::Languages "none";\n'
            'Acquire::Retries "0";\n'
            'DPkg::Use-Pty "false";\n'
            # dpkg --root: unpack into the root and chroot into it to run maintainer scripts.
            f'DPkg::Options {{ "--root={r}"; "--log={r}/var/log/dpkg.log"; '
            '"--force-unsafe-io"; };\n'
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "LANG", "LC_ALL", "TMPDIR") or k.lower().endswith("_proxy")
        }
        env.update(
            APT_CONFIG=str(conf),
            DEBIAN_FRONTEND="noninteractive",
            DEBCONF_NONINTERACTIVE_SEEN="true",
        )
        return env

    def prepare(self, root: Path) -> None:
        if self.base_pkg is None:
            self.base_pkg = build_base_deb(self.work, self.arch)
        for d in (
            "var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers",
            "var/lib/apt/lists/partial", "var/cache/apt/archives/partial",
            "etc/apt/sources.list.d", "etc/apt/apt.conf.d", "etc/apt/preferences.d",
            "etc/apt/trusted.gpg.d", "var/log/apt",
        ):  # fmt: skip
            (root / d).mkdir(parents=True, exist_ok=True)
        for f in ("status", "available"):
            (root / "var/lib/dpkg" / f).touch()
        (root / "var/lib/dpkg/arch").write_text(self.arch + "\n")
        # --log too: dpkg's log path is not relative to --root.
        result = self.sh(
            ["dpkg", f"--root={root}", f"--log={root}/var/log/dpkg.log", "--force-unsafe-io",
             "--install", self.base_pkg]
        )  # fmt: skip
        if not result.ok:
            raise UsageError(f"install-test: could not install the base into {root} (above)")
        (root / "etc/apt/sources.list").write_text(
            "# lockmaster per-change test repository: the only package source of this root\n"
            f"deb [trusted=yes] {self.repo_url} {self.info['codename']} "
            f"{self.info['component']}\n"
        )
        update = self.sh(["apt-get", "update"], env=self.apt_env(root))
        if not update.ok or re.search(r"^(E|W): ", update.output, re.M):
            raise StepFailed(f"apt-get update failed for the test repository {self.repo_url}")

    def status(self, root: Path, name: str) -> str:
        proc = subprocess.run(
            ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${db:Status-Abbrev}",
             name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return proc.stdout.strip() if proc.returncode == 0 else "not-installed"

    def install(self, root: Path, pkg: Package) -> list[str]:
        result = self.sh(
            ["apt-get", "install", f"{pkg.name}={pkg.version}"], env=self.apt_env(root)
        )
        status = self.status(root, pkg.name)
        problems = []
        if not result.ok or status != "ii":
            why = interesting(
                result.output,
                [r"^E: ", r"dpkg: error", r"returned error exit status", r"trying to overwrite",
                 r"[Cc]onflict", r"Depends:", r"unmet"],
            )  # fmt: skip
            problems.append(
                f"install failed (apt-get exit {result.returncode}, dpkg status {status!r})"
                + ("".join(f"\n      {w}" for w in why))
            )
        return problems

    def remove(self, root: Path, pkg: Package) -> list[str]:
        result = self.sh(
            ["apt-get", "purge", "--autoremove", pkg.name], env=self.apt_env(root)
        )
        status = self.status(root, pkg.name)
        problems = []
        if not result.ok or status not in ("not-installed", "un", "pn"):
            why = interesting(result.output, [r"^E: ", r"dpkg: error", r"returned error"])
            problems.append(
                f"removal failed (apt-get purge exit {result.returncode}, dpkg status "
                f"{status!r})" + "".join(f"\n      {w}" for w in why)
            )
        return problems

    def installed_others(self, root: Path) -> list[str]:
        proc = subprocess.run(
            ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
             "-f=${Package} ${Version} ${db:Status-Abbrev}\n"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        left = []
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] != BASE_NAME and parts[2] not in ("un", "pn"):
                left.append(f"{parts[0]} {parts[1]} ({parts[2]})")
        return left


class RpmInstaller(Installer):
    fmt = "rpm"
    ignored = IGNORED_COMMON + IGNORED_RPM

    def __init__(self, source: RepoSource, work: Path, prefix: list[str]) -> None:
        super().__init__(source, work, prefix)
        require_tools("dnf", "rpm")
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME") or k.lower().endswith("_proxy")
        }
        self.env["LANG"] = self.env.get("LANG", "C.UTF-8")
        dbpath = subprocess.run(
            ["rpm", "--eval", "%{_dbpath}"], capture_output=True, text=True, env=self.env,
            check=False,
        ).stdout.strip()  # fmt: skip
        # Debian's rpm keeps its database in ~/.rpmdb: inside the root, that is ROOT/~/.rpmdb.
        if dbpath.startswith("/"):
            self.ignored = [*self.ignored, dbpath.strip("/")]
        self.reposdir = work / "no-system-repos"
        self.reposdir.mkdir(parents=True, exist_ok=True)
        self.conf = work / "dnf.conf"
        self.conf.write_text(
            "[main]\n"
            f"reposdir={self.reposdir}\n"
            "gpgcheck=0\nrepo_gpgcheck=0\nlocalpkg_gpgcheck=0\n"
            "install_weak_deps=0\nkeepcache=0\nplugins=0\nmetadata_expire=0\n"
            "clean_requirements_on_remove=1\nbest=1\nskip_if_unavailable=0\n"
            "protected_packages=\n"
            "\n[lockmaster-test]\n"
            "name=lockmaster per-change test repository\n"
            f"baseurl={self.repo_url}\n"
            "enabled=1\ngpgcheck=0\nrepo_gpgcheck=0\n"
        )

    def dnf(self, root: Path, *args: str) -> Result:
        return self.sh(
            ["dnf", "-y", "-c", self.conf, f"--installroot={root}", "--releasever=lockmaster",
             f"--setopt=reposdir={self.reposdir}", "--noplugins", "--disablerepo=*",
             "--enablerepo=lockmaster-test", *args],
            env=self.env,
        )  # fmt: skip

    def packages(self) -> list[Package]:
        try:
            rows = read_rpm_primary(fetch, self.repo_url)
        except (OSError, urllib.error.URLError, ET.ParseError) as exc:
            raise UsageError(
                f"install-test: cannot read RPM metadata at {self.repo_url}/repodata ({exc})"
            ) from exc
        pkgs = [Package(r["name"], r["version"], r["arch"]) for r in rows]
        compare_with_description(self.info, pkgs, f"{self.repo_url}/repodata")
        return sorted(pkgs, key=lambda p: (p.name, p.version))

    def prepare(self, root: Path) -> None:
        if self.base_pkg is None:
            self.base_pkg = build_base_rpm(self.work)
        result = self.sh(["rpm", "--root", root, "--install", self.base_pkg], env=self.env)
        if not result.ok:
            raise UsageError(f"install-test: could not install the base into {root} (above)")
        (root / "etc/dnf/modules.d").mkdir(parents=True)  # dnf's module state, made on install
        cache = self.dnf(root, "makecache")
        if not cache.ok:
            raise StepFailed(f"dnf cannot read the test repository {self.repo_url}")

    def nevra(self, pkg: Package) -> str:
        return f"{pkg.name}-{pkg.version}.{pkg.arch}"

    def is_installed(self, root: Path, pkg: Package) -> bool:
        proc = subprocess.run(
            ["rpm", "--root", str(root), "-q", self.nevra(pkg)],
            capture_output=True, text=True, env=self.env, check=False,
        )  # fmt: skip
        return proc.returncode == 0

    SCRIPTLET_FAILURE = (r"scriptlet failed", r"Error in \S+ scriptlet", r"scriptlet failure")

    def install(self, root: Path, pkg: Package) -> list[str]:
        result = self.dnf(root, "install", self.nevra(pkg))
        installed = self.is_installed(root, pkg)
        scriptlet = interesting(result.output, self.SCRIPTLET_FAILURE)
        if result.ok and installed and not scriptlet:
            return []
        why = scriptlet or interesting(
            result.output,
            [r"^Error", r"Problem", r"nothing provides", r"conflicts", r"^\s+- ", r"error:"],
        )
        return [
            f"install failed (dnf exit {result.returncode}, installed: {installed})"
            + "".join(f"\n      {w}" for w in why)
        ]

    def remove(self, root: Path, pkg: Package) -> list[str]:
        result = self.dnf(root, "remove", self.nevra(pkg))
        installed = self.is_installed(root, pkg)
        scriptlet = interesting(result.output, self.SCRIPTLET_FAILURE)
        if result.ok and not installed and not scriptlet:
            return []
        why = scriptlet or interesting(result.output, [r"^Error", r"error:"])
        return [
            f"removal failed (dnf exit {result.returncode}, still installed: {installed})"
            + "".join(f"\n      {w}" for w in why)
        ]

    def installed_others(self, root: Path) -> list[str]:
        proc = subprocess.run(
            ["rpm", "--root", str(root), "-qa", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\n"],
            capture_output=True, text=True, env=self.env, check=False,
        )  # fmt: skip
        return [
            line for line in proc.stdout.split() if line and not line.startswith(BASE_NAME + "-")
        ]


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
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    result = run(
        [*installer.prefix, chroot, str(root), f"/tmp/lockmaster-smoke/{script.name}"],
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
    prefix = privilege_prefix()
    require_tools("chroot")
    own_work = args.work is None
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="pkgtool-it-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        install_test(source, fmt, work, prefix, smoke_dir, args.smoke_timeout)
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
) -> None:
    installer: Installer = (DebInstaller if fmt == "deb" else RpmInstaller)(source, work, prefix)
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


# --------------------------------------------------------------------------------------------
# artifacts of the jobs this one depends on ($LOCKMASTER_ARTIFACTS_FILE)


def received_artifacts(name: str, *, everyone: bool = False) -> list[dict]:
    """The artifacts called `name` this build received: this change's own (from the jobs this
    one depends on), or with `everyone` also those of the changes ahead of it in the gate (a
    system test installs every test repository of its speculative state), nearest first."""
    path = os.environ.get("LOCKMASTER_ARTIFACTS_FILE")
    if not path:
        raise UsageError("$LOCKMASTER_ARTIFACTS_FILE is not set: run this step as a lockmaster "
                         "job that depends on the job making the artifact")
    try:
        received = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    named = [a for a in received if isinstance(a, dict) and a.get("name") == name]
    change = os.environ.get("LOCKMASTER_CHANGE")
    own = [a for a in named if change is None or str(a.get("change")) == change]
    if not own:
        jobs = sorted({str(a.get("job")) for a in received if isinstance(a, dict)})
        raise UsageError(
            f"no artifact {name!r} of this change was received (from jobs: "
            f"{', '.join(jobs) or 'none'}); make this job depend on the job that makes it")
    if not everyone:
        return own[-1:]
    others = [a for a in named if a not in own]
    return [*own[-1:], *others]


def cmd_artifact_url(args: argparse.Namespace) -> int:
    for artifact in received_artifacts(args.name, everyone=args.all):
        print(str(artifact["url"]).rstrip("/"))
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download a `build` artifact (manifest.json and every file it lists) into DEST, checking
    each file's sha256 against the manifest."""
    [artifact] = received_artifacts(args.name)
    base = str(artifact["url"]).rstrip("/")
    dest = Path(args.dest).resolve()
    if dest.exists() and any(dest.iterdir()):
        raise UsageError(f"fetch: {dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        raw = fetch(f"{base}/manifest.json")
        manifest = json.loads(raw)
    except (OSError, urllib.error.URLError, json.JSONDecodeError) as exc:
        raise UsageError(f"fetch: cannot read {base}/manifest.json: {exc}") from exc
    (dest / "manifest.json").write_bytes(raw)
    entries = [*manifest.get("packages", []), *manifest.get("extra_files", [])]
    for entry in entries:
        rel = str(entry["file"])
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise UsageError(f"fetch: manifest entry {rel!r} leaves the artifact")
        data = fetch(f"{base}/{urllib.parse.quote(rel)}")
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise StepFailed(f"fetch: {base}/{rel} does not have the manifest's sha256")
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    say(f"fetched {len(entries)} file(s) of {args.name!r} from {base} into {dest}")
    return 0


# --------------------------------------------------------------------------------------------
# command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="lockmaster's package steps on a build node (see docs/packaging.md).",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    b = sub.add_parser("build", help="build DEB and/or RPM binaries from a source tree")
    b.add_argument("src", metavar="SRC", help="fully unpacked source tree (debian/, *.spec)")
    b.add_argument("out", metavar="OUT", help="output directory (new or empty)")
    b.add_argument("--format", choices=["auto", "deb", "rpm"], default="auto")
    b.set_defaults(func=cmd_build)

    lint = sub.add_parser("lint", help="lintian / rpmlint the packages of a build")
    lint.add_argument("out", metavar="OUT", help="the OUT directory of `build`")
    lint.set_defaults(func=cmd_lint)

    r = sub.add_parser("test-repo", help="make the per-change test repository of a build")
    r.add_argument("out", metavar="OUT", help="the OUT directory of `build`")
    r.add_argument("repo", metavar="REPO", help="new directory for the test repository")
    r.add_argument("--codename", required=True, help="APT distribution name (OS codename)")
    r.add_argument("--component", default="main", help="APT component (default: main)")
    r.set_defaults(func=cmd_test_repo)

    i = sub.add_parser("install-test", help="install/smoke/remove each package in a clean root")
    i.add_argument("repo", metavar="REPO", help="test repository: directory or http(s) URL")
    i.add_argument("--format", choices=["auto", "deb", "rpm"], required=True,
                   help="auto: every format the repository has")
    i.add_argument("--smoke-dir", metavar="DIR", help="smoke scripts: DIR/<package-name>.sh")
    i.add_argument("--work", metavar="DIR", help="work directory (default: a temporary one)")
    i.add_argument(
        "--smoke-timeout", type=float, default=300.0, metavar="SECONDS",
        help="time limit of each smoke script (default: 300)",
    )  # fmt: skip
    i.set_defaults(func=cmd_install_test)

    f = sub.add_parser("fetch", help="download a build artifact this job received")
    f.add_argument("name", metavar="NAME", help="the artifact's name (e.g. packages)")
    f.add_argument("dest", metavar="DEST", help="new or empty directory")
    f.set_defaults(func=cmd_fetch)

    u = sub.add_parser("artifact-url", help="print the URL of an artifact this job received")
    u.add_argument("name", metavar="NAME", help="the artifact's name (e.g. repo)")
    u.add_argument("--all", action="store_true",
                   help="also those of the changes ahead in the gate, one per line")
    u.set_defaults(func=cmd_artifact_url)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        sys.stdout.flush()
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except StepFailed as exc:
        sys.stdout.flush()
        print(f"{PROG} {args.command}: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
