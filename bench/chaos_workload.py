"""The chaos harness's workload: the repositories, the deployment's configuration, and the
reviewer's script (upload, wait for the check, maybe recheck, approve in dependency order,
wait for the gate), driven through the chaos Gerrit as a real Gerrit's users would."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos_checks import FINAL_ACTIONS, parse_tag
from bench.chaos_gerrit import ChaosGerrit
from tests.gitrepos import ReviewSite

APP = "chaos/app"
PKG = "chaos/pkg"
HELLO = Path(__file__).resolve().parent.parent / "lockmaster" / "demo" / "packages" / "hello"
PACKAGE = "lockmaster-hello"
TE_JOB = (
    "python3 -c \"import json,os,time; d=json.load(open(os.environ['TE_DATAFILE'])); "
    "L=d['lease']; rec=lambda w: open('{holds}','a').write("
    "'%s %s %s %s %r\\n' % (w, d['te'], L['generation'], L['id'], time.time())); "
    "rec('start'); time.sleep(3); rec('end'); print('TE', d['te'], L['generation'])\""
)
RECHECK = r"(?i)^(Patch Set [0-9]+:)?( [\w\\+-]*)*(\n\n)?\s*recheck\s*$"
TE_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDevelopmentTEHostKeyNotUsedForSSH0000"


@dataclass
class Planned:
    project: str
    number: int
    kind: str  # plain, child (git parent), depends (Depends-On), broken, package
    needs: int | None = None  # the change it sits on or depends on
    recheck: bool = False
    version: str | None = None  # package changes: the version it builds
    commit: str = ""

    @property
    def good(self) -> bool:
        return self.kind != "broken"


@dataclass
class Progress:
    started: float = field(default_factory=time.time)
    approved: dict[int, asyncio.Event] = field(default_factory=dict)
    timeouts: list[str] = field(default_factory=list)
    done: int = 0


def plan(app_groups: int, package_changes: int) -> list[Planned]:
    """Per group of five app changes: plain, plain, a git child of the second, one naming the
    first in Depends-On (rechecked), a broken one (rechecked); then a stack of package
    changes, each a new version on top of the one before."""
    out: list[Planned] = []
    number = 100
    for _ in range(app_groups):
        first, second = number + 1, number + 2
        out += [Planned(APP, first, "plain"), Planned(APP, second, "plain", recheck=True),
                Planned(APP, number + 3, "child", needs=second),
                Planned(APP, number + 4, "depends", needs=first, recheck=True),
                Planned(APP, number + 5, "broken", recheck=True)]
        number += 5
    previous: int | None = None
    for i in range(package_changes):
        number += 1
        out.append(Planned(PKG, number, "package", needs=previous, version=f"1.0.{i + 1}"))
        previous = number
    return out


def hello_files() -> dict[str, str]:
    return {str(p.relative_to(HELLO)): p.read_text() for p in sorted(HELLO.rglob("*"))
            if p.is_file()}


def changelog(versions: list[str]) -> str:
    entries = [f"{PACKAGE} ({v}) unstable; urgency=medium\n\n  * Chaos change {v}.\n\n"
               " -- lockmaster CI <ci@lockmaster.example.org>  Mon, 01 Jan 2024 00:00:00 +0000"
               "\n\n" for v in reversed(versions)]
    return "".join(entries) + (HELLO / "debian" / "changelog").read_text()


def create_repos(site: ReviewSite) -> None:
    site.create_project(APP, files={"README": "chaos app\n"})
    site.create_project(PKG, files=hello_files())


def upload(site: ReviewSite, fake: ChaosGerrit, change: Planned, by_number: dict[int, Planned]
           ) -> None:
    """Push the change's commit and make it a Gerrit change (no event yet)."""
    parent = None
    message = f"Chaos {change.kind} change {change.number}\n"
    if change.kind == "package":
        versions = []
        link: Planned | None = change
        while link is not None:
            versions.insert(0, link.version or "")
            link = by_number.get(link.needs) if link.needs else None
        spec = (HELLO / f"{PACKAGE}.spec").read_text().replace(
            "Version:        1.0.0", f"Version:        {change.version}")
        files = {"debian/changelog": changelog(versions), f"{PACKAGE}.spec": spec}
        parent = by_number[change.needs].commit if change.needs else None
    elif change.kind == "broken":
        files = {f"BROKEN-{change.number}": "x\n"}
    else:
        files = {f"change{change.number}.txt": f"{change.number}\n"}
        if change.kind == "child" and change.needs:
            parent = by_number[change.needs].commit
        if change.kind == "depends" and change.needs:
            message += f"\nDepends-On: {fake.url}/c/{APP}/+/{change.needs}\n"
    ref = site.push_change(change.project, change.number, files=files, message=message,
                           parent=parent)
    change.commit = ref.commit or ""
    fake.add_change(change.project, "master", change.number, commit=change.commit,
                    change_id=ref.change_id,
                    message=site_message(site, change.project, change.commit),
                    parents=[site.rev_parse(change.project, f"{change.commit}^")])


def site_message(site: ReviewSite, project: str, commit: str) -> str:
    from tests.gitrepos import run_git

    return run_git("log", "-1", "--format=%B", commit, cwd=site.repo(project))


def finals(fake: ChaosGerrit, pipeline: str, number: int, patchset: int = 1) -> int:
    count = 0
    for review in fake.reviews:
        parsed = parse_tag(review.get("tag"))
        if parsed and parsed[0] == pipeline and parsed[2] in FINAL_ACTIONS \
                and review["number"] == number and review["patchset"] == patchset:
            count += 1
    return count


async def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.5)
    return False


async def review_change(fake: ChaosGerrit, change: Planned, progress: Progress,
                        timeout: float) -> None:
    """The reviewer's script for one change (it is uploaded already)."""
    n = change.number
    await fake.publish("upload", fake.patchset_created_event(n))
    if not await wait_until(lambda: finals(fake, "check", n) >= 1, timeout):
        progress.timeouts.append(f"{n}: no check report")
    if change.recheck:
        await fake.publish("recheck", fake.comment_added_event(n, "Patch Set 1:\n\nrecheck"))
        if not await wait_until(lambda: finals(fake, "check", n) >= 2, timeout):
            progress.timeouts.append(f"{n}: no report of the recheck")
    if change.needs is not None:  # what it needs is approved first
        await progress.approved[change.needs].wait()
    await fake.publish("approve", fake.comment_added_event(
        n, "Patch Set 1: Code-Review+2 Workflow+1", {"Code-Review": 2, "Workflow": 1},
        author="core"))
    progress.approved[n].set()
    if not await wait_until(lambda: finals(fake, "gate", n) >= 1, timeout):
        progress.timeouts.append(f"{n}: no gate report")
    progress.done += 1


async def run_workload(site: ReviewSite, fake: ChaosGerrit, changes: list[Planned],
                       spacing: float, timeout: float) -> Progress:
    progress = Progress()
    by_number = {c.number: c for c in changes}
    for change in changes:
        progress.approved[change.number] = asyncio.Event()
        await asyncio.to_thread(upload, site, fake, change, by_number)
    tasks = []
    for change in changes:
        tasks.append(asyncio.create_task(review_change(fake, change, progress, timeout)))
        await asyncio.sleep(spacing)
    await asyncio.gather(*tasks)
    return progress


def config_data(work: Path, connection: dict[str, Any], temporal: str, log_url: str,
                log_store: dict[str, Any], state: Path, holds: Path) -> dict[str, Any]:
    graph_pkg = ["package-build"]
    return {
        "state-dir": str(state),
        "temporal": {"address": temporal, "task-queue-prefix": "chaos"},
        "connections": {"gerrit": connection},
        "logs": {"root": str(work / "logstore"), "url": log_url, "store": log_store,
                 **({"serve": {"listen": "127.0.0.1", "port": int(log_url.rsplit(":", 1)[1])}}
                    if log_store.get("driver") == "directory" else {})},
        "nodes": {"providers": [{"name": "local", "driver": "local", "pools": [
            {"name": "main", "labels": ["local"], "max-servers": 4}]}]},
        "pipelines": [
            {"name": "check", "manager": "independent",
             "trigger": [{"event": "patchset-created"},
                         {"event": "comment-added",
                          "comment": RECHECK}],
             "success": {"labels": {"Verified": 1}}, "failure": {"labels": {"Verified": -1}}},
            {"name": "gate", "manager": "dependent",
             "trigger": [{"event": "comment-added", "approval": {"Workflow": 1}}],
             "require": {"Code-Review": 2, "Workflow": 1}, "supersedes": ["check"],
             "start": {"labels": {"Verified": 0}},
             "success": {"labels": {"Verified": 2}, "submit": True},
             "failure": {"labels": {"Verified": -2}}},
        ],
        "testenvs": {"lease-ttl": 60, "hosts": [{
            "name": "tehost1", "libvirt-uri": "test:///default", "address": "127.0.0.1",
            "host-key": TE_HOST_KEY,
            "te-count": 2, "nodes-per-te": 1}]},
        "publishing": {
            "codename": "bookworm",
            "signing": {"gnupg-home": str(work / "publish-gnupg"),
                        "key-id": "lockmaster chaos archive key", "generate": True},
            "mirrors": [{"name": m, "driver": "directory", "path": str(work / "mirrors" / m)}
                        for m in ("mirror1", "mirror2")],
            "grace-period": 86400},
        "packaging": {"clean-roots": False, "cache": {"enabled": False}},
        "jobs": [
            {"name": "unit", "run": "sleep 2; ! ls BROKEN-* 2>/dev/null", "nodeset": "local",
             "timeout": 300},
            {"name": "devtest", "run": TE_JOB.format(holds=holds), "nodeset": "local",
             "testenv": "default", "timeout": 300},
            {"name": "package-build", "package": {"step": "build"}, "nodeset": "local",
             "timeout": 900},
        ],
        "projects": [
            {"name": APP, "connection": "gerrit", "queue": "chaos", "pipelines": {
                "check": {"jobs": ["unit"]},
                "gate": {"jobs": ["unit", {"name": "devtest", "dependencies": ["unit"]}]}}},
            {"name": PKG, "connection": "gerrit", "queue": "chaos", "pipelines": {
                "check": {"jobs": graph_pkg}, "gate": {"jobs": graph_pkg}},
             "publish": {"build-job": "package-build"}},
        ],
    }
