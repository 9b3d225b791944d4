"""The shell command of each packaging step (`package:` in a job), run in the project's checkout
on the node with lockmaster's package tool (pkgtool.py, copied into every workspace as
`.lockmaster/pkgtool.py`: build nodes do not have lockmaster installed).

Steps hand their results on as build artifacts (docs/packaging.md): `build` makes `packages`
(the binaries and manifest.json), `test-repo` makes `repo` (the change's test repository, served
over HTTP by the log server); the later steps find them in $LOCKMASTER_ARTIFACTS_FILE.
"""

from __future__ import annotations

import shlex

from lockmaster.config.models import LockmasterConfig, PackageStep

TOOL = '"$LOCKMASTER_WORKSPACE/.lockmaster/pkgtool.py"'
FETCHED = '"$LOCKMASTER_WORKSPACE/.lockmaster/packages"'
PACKAGES_ARTIFACT = "packages"
REPO_ARTIFACT = "repo"


def package_command(step: PackageStep, config: LockmasterConfig) -> str:
    tool = f"python3 {TOOL}"
    source = shlex.quote(step.source)
    fetch = f"{tool} fetch {PACKAGES_ARTIFACT} {FETCHED}"
    if step.step == "build":
        return (f'{tool} build {source} "$LOCKMASTER_ARTIFACTS/{PACKAGES_ARTIFACT}" '
                f"--format {step.format}")
    if step.step == "lint":
        return f"{fetch} && {tool} lint {FETCHED}"
    if step.step == "test-repo":
        publishing = config.publishing
        return (f'{fetch} && {tool} test-repo {FETCHED} "$LOCKMASTER_ARTIFACTS/{REPO_ARTIFACT}" '
                f"--codename {shlex.quote(publishing.codename)} "
                f"--component {shlex.quote(publishing.component)}")
    # install-test: every format the test repository has, one package at a time; the smoke
    # scripts (smoke/<package>.sh) are the source tree's, when it has them.
    smoke = shlex.quote(f"{step.source.rstrip('/')}/smoke")
    return (f"if [ -d {smoke} ]; then set -- --smoke-dir {smoke}; else set --; fi; "
            f'{tool} install-test "$({tool} artifact-url {REPO_ARTIFACT})" '
            f'--format {step.format} "$@"')
