"""pkgtool build: binaries, logs and manifest.json from a fully unpacked source tree."""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pkg_cleanbuild import CleanRoot, build_deb_in_root
from pkg_common import (
    MANIFEST_VERSION,
    StepFailed,
    UsageError,
    interesting,
    require_tools,
    run,
    say,
    sha256_file,
    write_json,
)
from pkg_roots import distribution_from_args, extra_repos, require_root, roots_dir
from pkg_rpmdeps import check_buildrequires

TAR_SUFFIXES = {
    ".tar.gz": "w:gz",
    ".tgz": "w:gz",
    ".tar.bz2": "w:bz2",
    ".tbz2": "w:bz2",
    ".tar.xz": "w:xz",
    ".txz": "w:xz",
    ".tar": "w",
}


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
    return collect_changes(workdir, out, log_path)



def collect_changes(workdir: Path, out: Path, log_path: Path) -> list[Artifact]:
    """Move what dpkg-buildpackage made in `workdir` (the files each .changes lists) to OUT/deb."""
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
    src: Path, spec: Path, out: Path, scratch: Path, exclude: Sequence[Path],
    rpm_repos: Sequence[str] = (),
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
            required = brs.lines() if brs.ok and brs.output.strip() else []
            if rpm_repos:
                check_buildrequires(required, list(rpm_repos), work / "builddeps", log)
                say("NOTE: this node is not an RPM-based system: the BuildRequires exist in "
                    "the RPM repositories (above), and the build runs with --nodeps on the "
                    "node's own tools.", log)
            else:
                say(
                    "NOTE: this node is not an RPM-based system (its rpm database is empty), "
                    "so rpmbuild cannot check BuildRequires; building with --nodeps. "
                    f"Unverified BuildRequires: {', '.join(required) or 'none'} (configure "
                    "packaging.rpm-repositories to resolve them)",
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


def clean_root_from_args(args: argparse.Namespace, command: str) -> CleanRoot | None:
    dist = distribution_from_args(args, command)
    if dist is None:
        if getattr(args, "extra_repo", None):
            raise UsageError(f"{command}: --extra-repo needs --distribution (clean roots)")
        return None
    return CleanRoot(dist, roots_dir(args), args.max_age,
                     extra_repos(args.extra_repo or [], command), tuple(args.build_include))


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
    clean = clean_root_from_args(args, "build")
    if "deb" in formats and clean is None:
        require_tools("dpkg-buildpackage", "dpkg-checkbuilddeps", "dpkg-deb")
    elif "deb" in formats:
        require_root("build")
        require_tools("dpkg-deb")
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
            if f == "deb" and clean is not None:
                artifacts += build_deb_in_root(src, out, scratch, exclude, clean)
            elif f == "deb":
                artifacts += build_deb(src, out, scratch, exclude)
            else:
                artifacts += build_rpm(src, specs[0], out, scratch, exclude, args.rpm_repo)
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
