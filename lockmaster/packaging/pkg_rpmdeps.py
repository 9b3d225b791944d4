"""RPM BuildRequires resolved against the configured RPM repositories (packaging.rpm-repositories).

On a node that is not RPM-based, rpmbuild cannot check BuildRequires (its rpm database is empty)
and builds with --nodeps. With RPM repositories configured, dnf resolves every BuildRequires
against them first (a dry-run install into an empty root): one that nothing provides fails the
build with its name. The build itself still uses the node's tools: without an RPM distribution
root, what is checked is that the build dependencies exist, not that the package builds with
them (docs/packaging.md says so).

Standard library only: uploaded with pkgtool.py to build nodes.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TextIO

from pkg_common import StepFailed, UsageError, require_tools, run, say

UNRESOLVED = re.compile(r"No match for argument: (\S+)|nothing provides (\S+(?: [<>=]+ \S+)?)")


def check_buildrequires(buildrequires: list[str], repos: list[str], work: Path,
                        log: TextIO | None) -> None:
    if not buildrequires:
        say("BuildRequires: none", log)
        return
    require_tools("dnf")
    for url in repos:
        if not re.match(r"^(https?|file)://", url):
            raise UsageError(f"build: --rpm-repo {url!r} is not an http(s):// or file:// URL "
                             "of an RPM repository (a directory with repodata/)")
    work.mkdir(parents=True, exist_ok=True)
    reposdir = work / "no-system-repos"
    reposdir.mkdir(exist_ok=True)
    conf = work / "dnf.conf"
    sections = "".join(f"[lockmaster-rpm-{n}]\nname=configured RPM repository {n}\n"
                       f"baseurl={url}\ngpgcheck=0\nenabled=1\n\n"
                       for n, url in enumerate(repos))
    conf.write_text(f"[main]\nreposdir={reposdir}\ninstall_weak_deps=0\nmetadata_expire=0\n"
                    f"cachedir={work / 'cache'}\nlogdir={work / 'log'}\n\n{sections}")
    root = work / "root"
    result = run(["dnf", "-c", str(conf), f"--installroot={root}", "--releasever=lockmaster",
                  "--noplugins", "--assumeno", "install", *buildrequires], log=log)
    shutil.rmtree(root, ignore_errors=True)
    missing: list[str] = []
    for m in UNRESOLVED.finditer(result.output):
        name = m.group(1) or m.group(2)
        if name not in missing:
            missing.append(name)
    if missing:
        raise StepFailed(
            f"BuildRequires not provided by the configured RPM repositories "
            f"({', '.join(repos)}): {', '.join(missing)}. Fix BuildRequires in the spec, or "
            "get the package into those repositories first")
    if "Operation aborted" not in result.output and not result.ok:
        raise StepFailed(f"dnf could not resolve BuildRequires against {', '.join(repos)} "
                         f"(exit {result.returncode}; output above)")
    say(f"BuildRequires resolved from the configured RPM repositories: "
        f"{', '.join(buildrequires)}", log)
