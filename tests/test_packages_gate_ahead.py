"""In the gate, a package whose build dependency a change ahead builds is built against that
change's package (Zuul's buildset registry, for packages): real workflows on the dev server,
real git, clean roots of the tests' distribution (mmdebstrap, apt, dpkg-buildpackage).

Two projects share a queue. The change to `ahead` builds lockmaster-ahead-dev 2.0; the change
to `behind` build-depends on lockmaster-ahead-dev (>= 2.0), which no distribution has. Its build
job `requires: [package-repository]`, the test-repo job `provides` it: the build waits for the
test repository of the change ahead, gets it as an extra repository of its build root, and both
changes merge.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from lockmaster.config.models import LockmasterConfig
from tests import distribution
from tests.deployment import make_config, unique_project
from tests.test_packages_e2e import _log, _logs, served_logs, unique_ids

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not distribution.available(), reason=distribution.missing_reason()),
    pytest.mark.skipif(os.geteuid() != 0, reason="clean roots need root (chroot, mounts)"),
]

JOBS: list[dict[str, Any]] = [
    {"name": "package-build", "package": {"step": "build", "format": "deb"},
     "requires": ["package-repository"], "timeout": 900},
    {"name": "package-repo", "package": {"step": "test-repo"},
     "provides": ["package-repository"]},
    {"name": "package-install", "package": {"step": "install-test", "format": "deb"},
     "timeout": 900},
]
GRAPH: list[Any] = [
    "package-build",
    {"name": "package-repo", "dependencies": ["package-build"]},
    {"name": "package-install", "dependencies": ["package-repo"]},
]


def debian_tree(name: str, version: str, *, build_depends: str = "", files: dict[str, str],
                install: str = "", rules_extra: str = "") -> dict[str, str]:
    bd = "debhelper-compat (= 13)" + (f", {build_depends}" if build_depends else "")
    tree = {
        "debian/source/format": "3.0 (native)\n",
        "debian/control": (
            f"Source: {name}\nSection: misc\nPriority: optional\n"
            "Maintainer: lockmaster tests <tests@lockmaster.example.org>\n"
            f"Build-Depends: {bd}\nStandards-Version: 4.6.2\nRules-Requires-Root: no\n\n"
            f"Package: {name}\nArchitecture: all\nDepends: ${{misc:Depends}}\n"
            f"Description: lockmaster test package {name}\n A package made by the tests.\n"),
        "debian/changelog": (
            f"{name} ({version}) unstable; urgency=medium\n\n  * Test.\n\n -- lockmaster "
            "tests <tests@lockmaster.example.org>  Sun, 06 Dec 2026 12:00:00 +0000\n"),
        "debian/copyright": "Format: https://www.debian.org/doc/packaging-manuals/copyright-"
                            "format/1.0/\n\nFiles: *\nCopyright: none\nLicense: CC0-1.0\n",
        "debian/rules": "#!/usr/bin/make -f\n%:\n\tdh $@\n" + rules_extra,
        **files,
    }
    if install:
        tree[f"debian/{name}.install"] = install + "\n"
    return tree


async def test_a_build_dependency_built_by_the_change_ahead_comes_from_it(
        client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from lockmaster.review.local import LocalReviewStore
    from tests.deployment import deployment
    from tests.test_gate_workflow import CHECK, GATE, approve

    ahead, behind = unique_project("ahead"), unique_project("behind")
    config = make_config(tmp_path, jobs=JOBS, pipelines=[CHECK, GATE], projects=[])
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    # After the dump: exclude_none would drop `keyring: null` (the tests' own distribution).
    data["packaging"] = distribution.packaging_config()
    data["projects"] = [{"name": name, "connection": "local", "queue": "packages",
                         "pipelines": {"gate": {"jobs": GRAPH}}} for name in (ahead, behind)]
    config = LockmasterConfig.model_validate(unique_ids(data))
    with served_logs(config):
        async with deployment(client, config) as dep:
            store: LocalReviewStore = dep.store
            store.create_project(ahead, debian_tree(
                "lockmaster-ahead-dev", "1.0", files={"ahead.h": "#define AHEAD 1\n"},
                install="ahead.h usr/include"))
            store.create_project(behind, {"README": "behind\n"})
            first, _ = await dep.upload(ahead, subject="ahead 2.0", files=debian_tree(
                "lockmaster-ahead-dev", "2.0", files={"ahead.h": "#define AHEAD 2\n"},
                install="ahead.h usr/include"))
            second, _ = await dep.upload(behind, subject="behind needs ahead 2.0",
                                         files=debian_tree(
                "lockmaster-behind", "1.0", build_depends="lockmaster-ahead-dev (>= 2.0)",
                files={}, rules_extra="override_dh_auto_build:\n"
                                      "\tgrep -q 'AHEAD 2' /usr/include/ahead.h\n"))
            await approve(dep, first.number)
            await approve(dep, second.number)
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                status = [store.record(n)["status"] for n in (first.number, second.number)]
                failed = [r for n in (first.number, second.number) for r in dep.reports(n)
                          if "Build failed" in r["message"]]
                if status == ["MERGED", "MERGED"] or failed:
                    break
                await asyncio.sleep(1)
    if status != ["MERGED", "MERGED"]:
        print(_logs(config))
    assert status == ["MERGED", "MERGED"], (status, failed)
    build_log = _log(config, "package-build")
    # The behind change's build root had the ahead change's test repository, pinned.
    assert "pinned above the distribution (label lockmaster-test-" in build_log
    assert "+ lockmaster-ahead-dev:all 2.0" in build_log
    assert "dpkg-deb: building package 'lockmaster-behind'" in build_log
