"""pkgtool lint and test-repo: policy checks and the per-change test repository."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from pkg_build import deb_fields, is_binary
from pkg_common import (
    NAME_RE,
    PROG,
    StepFailed,
    UsageError,
    host_deb_arch,
    require_tools,
    run,
    say,
    sha256_file,
    write_json,
)
from pkg_roots import TEST_REPO_LABEL

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


def reprepro_distributions(codename: str, component: str, architectures: list[str],
                           label: str = TEST_REPO_LABEL) -> str:
    return (
        "Origin: lockmaster\n"
        # A label of its own: clean roots pin each test repository by it (pkg_roots.py).
        f"Label: {label}\n"
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
    # Unique per build: the hash of what it holds.
    label = TEST_REPO_LABEL + "-" + hashlib.sha256(
        "".join(sorted(e["sha256"] for e in binaries)).encode()).hexdigest()[:12]
    (conf / "distributions").write_text(
        reprepro_distributions(codename, component, architectures, label))
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
