"""Packaging CI end to end on the real dev server, real git, local nodes and the real tools
(dpkg-buildpackage, rpmbuild, lintian, rpmlint, reprepro, createrepo_c, apt/dpkg, dnf): a change
to the example package is built, linted, published to its test repository (served over HTTP by
the log server) and install-tested, and its system test sees the test repository; a broken
install test aborts the system test.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockmaster.config.models import LockmasterConfig
from lockmaster.logserver import LogServer
from lockmaster.model.build import Result
from tests import distribution
from tests.deployment import deployment, make_config, unique_project
from tests.ports import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not distribution.available(), reason=distribution.missing_reason()),
    pytest.mark.skipif(os.geteuid() != 0, reason="clean roots need root (chroot, mounts)"),
]

HELLO = Path(__file__).parent.parent / "lockmaster" / "demo" / "packages" / "hello"
PKGTOOL = '"$LOCKMASTER_WORKSPACE/.lockmaster/pkgtool.py"'

SYSTEST = (
    f"python3 {PKGTOOL} artifact-url repo --all > repos.txt && cat repos.txt && "
    "python3 -c \"import json,sys,urllib.request; "
    "[print('systest sees', u, sorted(json.load(urllib.request.urlopen(u + '/repo.json')))) "
    "for u in open('repos.txt').read().split()]\""
)

PACKAGE_JOBS: list[dict[str, Any]] = [
    {"name": "package-build", "package": {"step": "build"}, "nodeset": "local", "timeout": 900},
    {"name": "package-lint", "package": {"step": "lint"}, "nodeset": "local", "timeout": 600},
    {"name": "package-repo", "package": {"step": "test-repo"}, "nodeset": "local"},
    {"name": "package-install", "package": {"step": "install-test"}, "nodeset": "local",
     "timeout": 900},
    {"name": "package-systest", "run": SYSTEST, "nodeset": "local"},
]
PACKAGE_GRAPH: list[Any] = [
    "package-build",
    {"name": "package-lint", "dependencies": ["package-build"]},
    {"name": "package-repo", "dependencies": ["package-build"]},
    {"name": "package-install", "dependencies": ["package-repo"]},
    {"name": "package-systest", "dependencies": ["package-repo"],
     "aborted-by": ["package-install"]},
]


def package_files(root: Path = HELLO) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


@contextlib.contextmanager
def served_logs(config: LockmasterConfig) -> Iterator[LockmasterConfig]:
    """The log server on a free port, and the config saying where it is."""
    server = LogServer(config.logs_root, "127.0.0.1", free_port()).start()
    try:
        config.logs.url = f"http://127.0.0.1:{server.port}"
        yield config
    finally:
        server.stop()


async def publication(client, wid: str, config: LockmasterConfig,  # type: ignore[no-untyped-def]
                      timeout: float = 600):
    """The result of `publish/...` once the gate merged the change and it ran (bounded)."""
    import asyncio

    from temporalio.service import RPCError

    from lockmaster.model.publish import PublishResult

    async with asyncio.timeout(timeout):
        while True:
            try:
                return await client.get_workflow_handle(wid, result_type=PublishResult).result()
            except RPCError:  # not started yet
                await asyncio.sleep(0.5)


def unique_ids(data: dict[str, Any]) -> dict[str, Any]:
    """Long-lived workflows (the publish queue) of this test's own: they outlive the test on
    the session's server, polling a task queue nobody serves any more."""
    data["temporal"]["workflow-id-prefix"] = f"{data['temporal']['task-queue-prefix']}/"
    return data


def clean_roots() -> dict[str, Any]:
    """Builds and install tests in clean roots of the tests' Debian repository (issue 13)."""
    return distribution.packaging_config()


def package_config(tmp_path: Path, name: str) -> LockmasterConfig:
    return make_config(
        tmp_path, jobs=PACKAGE_JOBS, packaging=clean_roots(),
        projects=[{"name": name, "connection": "local",
                   "pipelines": {"check": {"jobs": PACKAGE_GRAPH}}}])


async def test_a_package_change_is_built_linted_published_and_install_tested(
        client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = unique_project("hello")
    with served_logs(package_config(tmp_path, name)) as config:
        async with deployment(client, config) as dep:
            dep.store.create_project(name, package_files())
            info, actions = await dep.upload(name, files={"README": "a change\n"},
                                             subject="Touch the example package")
            outcome = await dep.outcome(actions[0].workflow_id or "", timeout=600)
    assert outcome.result == "SUCCESS", _logs(config)
    assert set(outcome.job_results.values()) == {Result.SUCCESS}
    builds = {b.job: b for b in outcome.builds}
    assert [a.name for a in builds["package-build"].artifacts] == ["packages"]
    [repo] = builds["package-repo"].artifacts
    assert repo.name == "repo" and repo.url.startswith(config.logs.url)
    systest_log = _log(config, "package-systest")
    assert f"systest sees {repo.url.rstrip('/')} ['deb', 'rpm']" in systest_log
    install_log = _log(config, "package-install")
    assert "install-test summary (deb)" in install_log
    assert "install-test summary (rpm)" in install_log
    report = dep.reports(info.number)[-1]["message"]
    assert "Build succeeded (check)." in report and "- package-install " in report


async def test_a_failing_install_test_aborts_the_system_test(
        client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = unique_project("hello")
    jobs = [dict(j) for j in PACKAGE_JOBS]
    jobs[-1] = {"name": "package-systest", "run": f"{SYSTEST}; sleep 600",
                "nodeset": "local", "timeout": 900}
    config = make_config(
        tmp_path, jobs=jobs, packaging=clean_roots(),
        projects=[{"name": name, "connection": "local",
                   "pipelines": {"check": {"jobs": PACKAGE_GRAPH}}}])
    files = package_files()
    # The package's postinst fails: it builds and lints, but does not install.
    files["debian/lockmaster-hello.postinst"] = "#!/bin/sh\nset -e\necho broken >&2\nexit 1\n"
    with served_logs(config):
        async with deployment(client, config) as dep:
            dep.store.create_project(name, package_files())
            _, actions = await dep.upload(name, files=files, subject="Break the postinst")
            outcome = await dep.outcome(actions[0].workflow_id or "", timeout=600)
    assert outcome.result == "FAILURE", _logs(config)
    assert outcome.job_results["package-install"] is Result.FAILURE
    assert outcome.job_results["package-systest"] is Result.ABORTED
    assert "lockmaster-hello" in _log(config, "package-install")


def _log(config: LockmasterConfig, job: str) -> str:
    logs = [p.read_text() for p in config.logs_root.rglob("job-output.txt")
            if f"/{job}/" in str(p)]
    return "\n".join(logs)


def _logs(config: LockmasterConfig) -> str:
    return "\n\n".join(f"== {p}\n{p.read_text()[-3000:]}"
                       for p in config.logs_root.rglob("job-output.txt"))


async def test_merged_package_is_published_signed_and_installable_from_every_mirror(
        client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Approve a change to the example package: the gate tests and merges it; the merge is
    announced; the package the gate built and tested is promoted (the merged commit has the
    tree the gate tested; nothing is rebuilt), published into the signed stable repository and
    synced to two mirrors, each served over HTTP; a client that trusts only the repository key
    installs the package from each mirror and runs it."""
    import asyncio

    from lockmaster.model.publish import StepState
    from lockmaster.publishing.client import install_from_mirror
    from lockmaster.starters.publish import Publications, change_workflow_id
    from lockmaster.workers.publisher import publisher_worker
    from tests.publishing_helpers import make_signing_key, stop_gpg_agent
    from tests.test_gate_workflow import CHECK, GATE, approve

    name = unique_project("hello")
    key = make_signing_key(tmp_path / "keys")
    mirrors = {m: tmp_path / "mirrors" / m for m in ("near", "far")}
    config = make_config(
        tmp_path, jobs=PACKAGE_JOBS[:4], pipelines=[CHECK, GATE], projects=[])
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["packaging"] = clean_roots()
    data["projects"] = [{"name": name, "connection": "local",
                         "pipelines": {"gate": {"jobs": PACKAGE_GRAPH[:4]}},
                         "publish": {"build-job": "package-build"}}]
    data["publishing"] = {
        "signing": {"gnupg-home": str(key.gnupghome), "key-id": key.fingerprint},
        "mirrors": [{"name": m, "driver": "directory", "path": str(p)}
                    for m, p in mirrors.items()]}
    config = LockmasterConfig.model_validate(unique_ids(data))
    servers = [LogServer(p, "127.0.0.1", free_port()).start() for p in mirrors.values()]
    try:
        with served_logs(config):
            async with deployment(client, config) as dep, \
                    publisher_worker(client, config, dep.drivers):
                dep.store.create_project(name, package_files())
                info, _ = await dep.upload(name, files={"README": "published\n"},
                                           subject="Publish the example package")
                await approve(dep, info.number)
                wid = change_workflow_id(config, name, info.number)
                try:
                    result = await publication(client, wid, config)
                except TimeoutError:
                    raise AssertionError(_logs(config)) from None
                shown = await Publications(client, config).show(name, info.number)
        assert result.ok, (result, _logs(config))
        assert dep.store.record(info.number)["status"] == "MERGED"
        merged = dep.store.record(info.number)["merged_commit"]
        assert shown.change.commit == merged
        assert [(s.name, s.state) for s in shown.steps] == [
            ("build", StepState.DONE), ("publish", StepState.DONE),
            ("sync:near", StepState.DONE), ("sync:far", StepState.DONE)]
        _assert_promoted(shown, config)
        public_key = config.publish_root / "signing-key.asc"
        for mirror, server in zip(mirrors, servers, strict=True):
            url = f"http://127.0.0.1:{server.port}/deb/current"
            root = tmp_path / "clients" / mirror
            files = await asyncio.to_thread(
                install_from_mirror, url, public_key, config.publishing.codename,
                "lockmaster-hello", _version(), root)
            assert "/usr/bin/lockmaster-hello" in files
            said = subprocess.run(["sh", str(root / "usr/bin/lockmaster-hello"), mirror],
                                  capture_output=True, text=True, check=True).stdout
            assert said == f"Hello from lockmaster, {mirror}!\n"
    finally:
        for server in servers:
            server.stop()
        stop_gpg_agent(key)


def _assert_promoted(shown: Any, config: LockmasterConfig) -> None:
    """The gate's build was published, checked by the publishing host as one, and nothing was
    built for the publication."""
    from lockmaster.model.publish import BuildSource

    prov = shown.provenance
    assert prov is not None and prov.source is BuildSource.GATE, prov
    assert prov.reason == f"trees equal: {prov.merged_tree}"
    assert prov.tested_commit != shown.change.commit == prov.merged_commit
    assert prov.publisher_check.startswith(f"the gate's build of {prov.tested_commit}")
    assert not list(config.logs_root.glob("*/*/*/publish")), "a publication built something"


def _version() -> str:
    changelog = (HELLO / "debian" / "changelog").read_text()
    return changelog.split("(", 1)[1].split(")", 1)[0]


def renamed(files: dict[str, str], new: str) -> dict[str, str]:
    """The example package under another name (a second package for the same repositories)."""
    return {path.replace("lockmaster-hello", new): text.replace("lockmaster-hello", new)
            for path, text in files.items()}


async def test_two_packages_merged_together_are_published_in_merge_order(
        client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two packages' changes approved back to back in one shared queue: both are gated and
    merged in order, both gate builds promoted (the second was tested on top of the first, and
    merged on top of it), published one after the other in merge order (the second snapshot
    holds both packages), and both reach the mirror."""
    import asyncio

    from lockmaster.publishing.client import install_from_mirror
    from lockmaster.starters.publish import Publications, change_workflow_id
    from lockmaster.workers.publisher import publisher_worker
    from tests.publishing_helpers import make_signing_key, stop_gpg_agent
    from tests.test_gate_workflow import CHECK, GATE, approve

    hello, bye = unique_project("hello"), unique_project("bye")
    key = make_signing_key(tmp_path / "keys")
    mirror = tmp_path / "mirror"
    config = make_config(tmp_path, jobs=PACKAGE_JOBS[:1], pipelines=[CHECK, GATE], projects=[])
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["packaging"] = clean_roots()
    data["projects"] = [{"name": name, "connection": "local", "queue": "packages",
                         "pipelines": {"gate": {"jobs": ["package-build"]}},
                         "publish": {"build-job": "package-build"}} for name in (hello, bye)]
    data["publishing"] = {
        "signing": {"gnupg-home": str(key.gnupghome), "key-id": key.fingerprint},
        "mirrors": [{"name": "local", "driver": "directory", "path": str(mirror)}]}
    config = LockmasterConfig.model_validate(unique_ids(data))
    server = LogServer(mirror, "127.0.0.1", free_port()).start()
    try:
        with served_logs(config):
            async with deployment(client, config) as dep, \
                    publisher_worker(client, config, dep.drivers):
                changes = []
                for name, files in ((hello, package_files()),
                                    (bye, renamed(package_files(), "lockmaster-bye"))):
                    dep.store.create_project(name, files)
                    info, _ = await dep.upload(name, files={"NEWS": f"{name}\n"},
                                               subject=f"Publish {name}")
                    changes.append((name, info.number))
                for _, number in changes:
                    await approve(dep, number)
                results = []
                for name, number in changes:
                    wid = change_workflow_id(config, name, number)
                    try:
                        results.append(await publication(client, wid, config))
                    except TimeoutError:
                        raise AssertionError(_logs(config)) from None
                queue = await Publications(client, config).queue()
                shown = [await Publications(client, config).show(name, number)
                         for name, number in changes]
        assert [r.ok for r in results] == [True, True], results
        for status in shown:
            _assert_promoted(status, config)
        first, second = (r.snapshot or "" for r in results)
        assert first.startswith("000001-") and second.startswith("000002-")
        assert [e.change.split()[0] for e in queue.entries] == [hello, bye]
        merged = [dep.store.record(n)["merged_commit"] for _, n in changes]
        assert all(merged)
        public_key = config.publish_root / "signing-key.asc"
        url = f"http://127.0.0.1:{server.port}/deb/current"
        for package in ("lockmaster-hello", "lockmaster-bye"):
            files = await asyncio.to_thread(
                install_from_mirror, url, public_key, config.publishing.codename, package,
                _version(), tmp_path / "client" / package)
            assert f"/usr/bin/{package}" in files
    finally:
        server.stop()
        stop_gpg_agent(key)
