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
import hashlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

# The other pkg_*.py modules are uploaded next to this file (lockmaster/execution/tools.py);
# found even under `python3 -I`, which leaves the script's directory off sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pkg_build import cmd_build
from pkg_common import PROG, StepFailed, UsageError, fetch, say
from pkg_install import cmd_install_test
from pkg_repo import cmd_lint, cmd_test_repo
from pkg_roots import VARIANTS, add_distribution_args, cmd_lock_diff, cmd_prepare_root

# --------------------------------------------------------------------------------------------
# artifacts of the jobs this one depends on ($LOCKMASTER_ARTIFACTS_FILE)


def received_artifacts(name: str, *, everyone: bool = False, ahead: bool = False) -> list[dict]:
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
    if ahead:  # only the changes ahead (a build, before this change has a repository)
        return [a for a in named if a not in own]
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
    for artifact in received_artifacts(args.name, everyone=args.all, ahead=args.ahead):
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
    b.add_argument("--extra-repo", action="append", default=[], metavar="URL",
                   help="a test repository (of a change ahead) visible to the build root, "
                        "pinned above the distribution (repeatable)")
    b.add_argument("--rpm-repo", action="append", default=[], metavar="URL",
                   help="an RPM repository that BuildRequires are resolved from (repeatable)")
    add_distribution_args(b)
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
    i.add_argument("--extra-repo", action="append", default=[], metavar="URL",
                   help="another test repository (a change ahead in the gate), pinned below "
                        "this change's and above the distribution (repeatable)")
    add_distribution_args(i)
    i.set_defaults(func=cmd_install_test)

    pr = sub.add_parser("prepare-root",
                        help="prepare (or reuse) the distribution's build and install roots")
    pr.add_argument("--variant", action="append", choices=VARIANTS,
                    help="buildd (build roots) or minbase (install roots); default: both")
    pr.add_argument("--include", action="append", default=[], metavar="PACKAGE",
                    help="also install this package in the root (repeatable)")
    add_distribution_args(pr)
    pr.set_defaults(func=cmd_prepare_root)

    ld = sub.add_parser("lock-diff", help="what changed between two lock files")
    ld.add_argument("old", metavar="OLD")
    ld.add_argument("new", metavar="NEW")
    ld.set_defaults(func=cmd_lock_diff)

    f = sub.add_parser("fetch", help="download a build artifact this job received")
    f.add_argument("name", metavar="NAME", help="the artifact's name (e.g. packages)")
    f.add_argument("dest", metavar="DEST", help="new or empty directory")
    f.set_defaults(func=cmd_fetch)

    u = sub.add_parser("artifact-url", help="print the URL of an artifact this job received")
    u.add_argument("name", metavar="NAME", help="the artifact's name (e.g. repo)")
    u.add_argument("--all", action="store_true",
                   help="also those of the changes ahead in the gate, one per line")
    u.add_argument("--ahead", action="store_true",
                   help="only those of the changes ahead in the gate (none: prints nothing)")
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
