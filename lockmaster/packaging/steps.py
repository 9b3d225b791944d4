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


def distribution_args(config: LockmasterConfig) -> str:
    """The clean-root options of `build` and `install-test` (empty: the node's own tools)."""
    packaging = config.packaging
    dist = packaging.target()
    if dist is None:
        return ""
    args = ["--distribution", packaging.mirror_for_roots() or dist.mirror,
            "--codename", config.publishing.codename]
    for suite in dist.extra_suites:
        args += ["--suite", suite]
    for component in dist.components:
        args += ["--dist-component", component]
    if dist.keyring is not None:
        args += ["--keyring", str(dist.keyring)]
    if packaging.roots.dir is not None:
        args += ["--roots", str(packaging.roots.dir)]
    args += ["--max-age", f"{packaging.roots.max_age:g}"]
    for package in packaging.roots.build_include:
        args += ["--build-include", package]
    return " " + shlex.join(args)


def ahead_repos(tool: str) -> str:
    """Shell that appends `--extra-repo URL` for the test repository of every change ahead in
    the gate that this job received (nearest first) to "$@"."""
    return (f"for url in $({tool} artifact-url {REPO_ARTIFACT} --ahead); do "
            'set -- "$@" --extra-repo "$url"; done; ')


def package_command(step: PackageStep, config: LockmasterConfig) -> str:
    tool = f"python3 {TOOL}"
    source = shlex.quote(step.source)
    fetch = f"{tool} fetch {PACKAGES_ARTIFACT} {FETCHED}"
    dist = distribution_args(config)
    if step.step == "build":
        rpm_repos = "".join(f" --rpm-repo {shlex.quote(url)}"
                            for url in config.packaging.rpm_repositories)
        return ("set --; " + (ahead_repos(tool) if dist else "")
                + f'{tool} build {source} "$LOCKMASTER_ARTIFACTS/{PACKAGES_ARTIFACT}" '
                f'--format {step.format}{dist}{rpm_repos} "$@"')
    if step.step == "lint":
        return f"{fetch} && {tool} lint {FETCHED}"
    if step.step == "test-repo":
        publishing = config.publishing
        return (f'{fetch} && {tool} test-repo {FETCHED} "$LOCKMASTER_ARTIFACTS/{REPO_ARTIFACT}" '
                f"--codename {shlex.quote(publishing.codename)} "
                f"--component {shlex.quote(publishing.component)}")
    # install-test: every format the test repository has, one package at a time; the smoke
    # scripts (smoke/<package>.sh) are the source tree's, when it has them; in clean roots
    # with the test repositories of the changes ahead too.
    smoke = shlex.quote(f"{step.source.rstrip('/')}/smoke")
    return (f"if [ -d {smoke} ]; then set -- --smoke-dir {smoke}; else set --; fi; "
            + (ahead_repos(tool) if dist else "")
            + f'{tool} install-test "$({tool} artifact-url {REPO_ARTIFACT})" '
            f'--format {step.format}{dist} "$@"')
