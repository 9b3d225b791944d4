"""The main job's packaging demo: a change to the example package `demo/lockmaster-hello` is
checked (built, linted, published to its test repository, install-tested), approved, gated,
merged, its gate build promoted (the merged commit has the tree the gate tested), published into
the signed stable repository, synced to the local mirror served over HTTP, and installed from
there by a client that trusts only the repository key."""

from __future__ import annotations

import asyncio
import email.utils
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.change import ChangeInfo, ReviewEvent
from lockmaster.model.check import CheckOutcome
from lockmaster.model.publish import PublishResult
from lockmaster.publishing.client import install_from_mirror
from lockmaster.publishing.snapshots import KEY_FILE
from lockmaster.review.local import LocalReviewStore
from lockmaster.starters.publish import change_workflow_id
from lockmaster.starters.router import EventRouter

PROJECT = "demo/lockmaster-hello"
SOURCE = Path(__file__).parent / "packages" / "hello"
PACKAGE = "lockmaster-hello"


def files() -> dict[str, str]:
    return {str(p.relative_to(SOURCE)): p.read_text() for p in sorted(SOURCE.rglob("*"))
            if p.is_file()}


def version(changelog: str | None = None) -> str:
    """The package version the newest changelog entry names."""
    text = changelog if changelog is not None else (SOURCE / "debian" / "changelog").read_text()
    return text.split("(", 1)[1].split(")", 1)[0]


def release_files(base: dict[str, str], release: int, when: float) -> dict[str, str]:
    """A new upstream release 1.0.<release> of the package: a changelog entry (DEB and RPM)
    and the spec's version. Every demo run publishes a version of its own, as a real package
    change must (the stable repository never takes other bits under a version it has)."""
    new = f"1.0.{release}"
    stamp = email.utils.formatdate(when, usegmt=True).replace("GMT", "+0000")
    day = time.strftime("%a %b %d %Y", time.gmtime(when))
    author = "lockmaster CI <ci@lockmaster.example.org>"
    changelog = (f"lockmaster-hello ({new}) unstable; urgency=medium\n\n"
                 f"  * Release {new}, published by lockmaster's demo.\n\n"
                 f" -- {author}  {stamp}\n\n") + base["debian/changelog"]
    spec = base["lockmaster-hello.spec"]
    spec = re.sub(r"(?m)^(Version:\s+).*$", rf"\g<1>{new}", spec)
    spec = spec.replace("%changelog\n", f"%changelog\n* {day} {author} - {new}-1\n"
                                        f"- Release {new}, published by lockmaster's demo.\n\n")
    return {"debian/changelog": changelog, "lockmaster-hello.spec": spec}


def _event(info: ChangeInfo, type_: str, **extra: object) -> ReviewEvent:
    return ReviewEvent(type=type_, connection=info.connection, project=info.project,  # type: ignore[arg-type]
                       branch=info.branch, change=info.number, patchset=info.patchset,
                       commit=info.commit, change_id=info.change_id, url=info.url,
                       **extra)  # type: ignore[arg-type]


async def run_packaging_demo(cfg: LockmasterConfig, client: Client, store: LocalReviewStore,
                             router: EventRouter, say: Callable[[str], None]) -> bool:
    """The whole path; says what happens; True when a client installed the package."""
    if cfg.project(PROJECT) is None or not cfg.publishing.mirrors:
        say("(no packaging demo: the configuration has no demo/lockmaster-hello or no mirror)")
        return True
    await asyncio.to_thread(store.create_project, PROJECT, files())
    tip = await asyncio.to_thread(branch_files, store)
    release = len(await asyncio.to_thread(store.numbers)) + 1
    changed = release_files(tip, release, time.time())
    new_version = version(changed["debian/changelog"])
    info = await asyncio.to_thread(store.upload, PROJECT, files=changed,
                                   subject=f"Release lockmaster-hello {new_version}")
    say(f"\npackaging demo: change {info.number},{info.patchset} uploaded to {PROJECT}")
    actions = await router.route(_event(info, "patchset-created"))
    check = next((a.workflow_id for a in actions
                  if a.workflow_id and a.action in ("started", "already-running")), None)
    if check is None:
        say(f"packaging demo: no check started ({', '.join(map(str, actions))})")
        return False
    outcome = await client.get_workflow_handle(check, result_type=CheckOutcome).result()
    say(f"packaging demo: check {outcome.result}: "
        + ", ".join(f"{job} {result}" for job, result in outcome.job_results.items()))
    if outcome.result != "SUCCESS":
        say(outcome.message)
        return False
    voted = await asyncio.to_thread(store.vote, info.number, {"Code-Review": 2, "Workflow": 1},
                                    author="core-reviewer")
    await router.route(_event(voted, "comment-added", author="core-reviewer",
                              comment=f"Patch Set {voted.patchset}: Code-Review+2 Workflow+1",
                              approvals={"Code-Review": 2, "Workflow": 1}))
    say("packaging demo: approved; the gate tests it as it will merge")
    wid = change_workflow_id(cfg, PROJECT, info.number)
    result = await _publication(client, wid, store, info.number, say)
    if result is None:
        return False
    for step in result.steps:
        say(f"packaging demo:   {step.name}: {step.state.value}  {step.detail or ''}")
    if not result.ok:
        say(f"packaging demo: publishing failed: {result.message}")
        return False
    mirror = cfg.publishing.mirrors[0]
    base = (mirror.url or "").rstrip("/")
    url = f"{base}/deb/current"
    key = cfg.publish_root / KEY_FILE  # the name the mirror serves it under, too
    with tempfile.TemporaryDirectory(prefix="lm-demo-client-") as tmp:
        root = Path(tmp)
        installed = await asyncio.to_thread(install_from_mirror, url, key,
                                            cfg.publishing.codename, PACKAGE, new_version, root)
        ran = await asyncio.to_thread(subprocess.run, ["sh", str(root / "usr/bin" / PACKAGE),
                                                       "demo"], capture_output=True, text=True)
        said = ran.stdout.strip()
    say(f"packaging demo: a client installed {PACKAGE} {new_version} from {url} (signature "
        f"checked with {key.name}; {len(installed)} paths); it says: {said}")
    return said.startswith("Hello from lockmaster")


def branch_files(store: LocalReviewStore, project: str = PROJECT) -> dict[str, str]:
    """The package's changelog and spec as the branch has them now (earlier demo runs released
    versions of their own)."""
    repo = store.repo(project)
    out = {}
    for name in ("debian/changelog", "lockmaster-hello.spec"):
        out[name] = subprocess.run(["git", "show", f"master:{name}"], cwd=repo,
                                   capture_output=True, text=True, check=True).stdout
    return out


async def _publish_result(client: Client, wid: str) -> PublishResult | None:
    try:
        return await client.get_workflow_handle(wid, result_type=PublishResult).result()
    except RPCError:
        return None  # not started yet


async def _publication(client: Client, wid: str, store: LocalReviewStore, number: int,
                       say: Callable[[str], None]) -> PublishResult | None:
    """Wait for the gate to merge the change and its publication to end."""
    merged = False
    for _ in range(1800):  # 15 minutes at most
        record = await asyncio.to_thread(store.record, number)
        if record["status"] == "MERGED" and not merged:
            merged = True
            say(f"packaging demo: merged as {record.get('merged_commit', '?')[:12]}; "
                f"publishing ({wid})")
        if record["status"] == "ABANDONED" or any(
                m["author"] == "lockmaster" and "failed (gate)" in m["message"]
                for m in record["messages"]):
            say("packaging demo: the gate did not merge it; see `lockmaster change show "
                f"{number}`")
            return None
        if merged:
            result = await _publish_result(client, wid)
            if result is not None:
                return result
        await asyncio.sleep(0.5)
    say("packaging demo: gave up waiting for the publication")
    return None
