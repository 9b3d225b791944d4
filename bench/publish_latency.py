"""Benchmark: from a merge to the package being installable from every mirror (issues 6 and 13).

Everything is real: the Temporal dev server; the orchestrator (the gate queue and its merger,
the publish queue and publish workflows, the look-up of the gate's build), executor (the
package build: dpkg-buildpackage and rpmbuild through pkgtool.py) and publisher (reprepro,
createrepo_c, gpg, rsync) workers; the log server serving the builds' artifacts; two directory
mirrors each served over HTTP. Each round makes a new release of the example package
(lockmaster/demo/packages/hello) in the local review system and polls both mirrors with a
client that trusts only the repository key (`apt-get update` + `apt-get download` of the new
version) until both serve it.

Two paths (`--path`):
- gate (default): the change is approved; the gate builds the package on its speculative
  merge, tests it and merges it (the local review system announces the merge, change-merged);
  the publication promotes the gate's build (same tree as the merged commit): nothing is built
  after the merge. The clock starts when the merge is announced.
- rebuild: the change is merged by hand and announced; no gate tested it, so the publication
  rebuilds the package from the merged commit (the path before issue 13, and every merge that
  did not go through the gate).

Measured per round:
- merged -> installable from both mirrors (end to end, as a user sees it; target for the
  gate path: p50 <= 2 s);
- the build step of `publish/<project>/<change>`: the look-up of the gate's build (gate path)
  or the look-up and the rebuild (rebuild path);
- the rest: merged -> installable minus the build step;
- and the publication's other steps: publish into the stable repository (sign, verify, switch),
  sync of each mirror; and which build was published and why (the provenance).

Run: .venv/bin/python -m bench.publish_latency [--rounds 5] [--path gate|rebuild|both]
(both: the paths take turns; about a minute for 5 rounds of each).
Results: printed, and written to bench/results/publish_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from lockmaster.config.models import LockmasterConfig
from lockmaster.demo.packaging import PACKAGE, branch_files, files, release_files, version
from lockmaster.logserver import LogServer
from lockmaster.model.change import ReviewEvent
from lockmaster.model.publish import PublishResult
from lockmaster.publishing.errors import VerificationError
from lockmaster.publishing.snapshots import KEY_FILE
from lockmaster.publishing.verify import apt_get_check
from lockmaster.review.local import LocalReviewDriver
from lockmaster.review.registry import review_drivers
from lockmaster.starters.publish import Publications, change_workflow_id
from lockmaster.starters.router import EventRouter
from lockmaster.temporal import search_attributes
from lockmaster.temporal.devserver import temporal_binary
from lockmaster.workers.executor import executor_worker
from lockmaster.workers.orchestrator import orchestrator_worker
from lockmaster.workers.publisher import publisher_worker
from tests import distribution
from tests.deployment import make_config
from tests.test_gate_workflow import CHECK, GATE

RESULTS = Path(__file__).parent / "results" / "publish_latency.json"
PROJECT = "bench/lockmaster-hello"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_config(state: Path, logs_port: int, mirrors: dict[str, Path]) -> LockmasterConfig:
    config = make_config(state, projects=[], prefix=f"b-{uuid.uuid4().hex[:8]}",
                         pipelines=[CHECK, GATE], jobs=[
                             {"name": "package-build", "package": {"step": "build"},
                              "nodeset": "local", "timeout": 900}])
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["logs"] = {"url": f"http://127.0.0.1:{logs_port}"}
    # Builds in clean roots of the tests' local Debian repository (as production builds in
    # clean roots): the rebuild path pays for one; the gate path builds before the merge.
    data["packaging"] = distribution.packaging_config()
    data["projects"] = [{"name": PROJECT, "connection": "local",
                         "pipelines": {"gate": {"jobs": ["package-build"]}},
                         "publish": {"build-job": "package-build"}}]
    data["publishing"] = {
        "signing": {"gnupg-home": str(state / "gnupg"), "key-id": "bench archive key",
                    "generate": True},
        "mirrors": [{"name": m, "driver": "directory", "path": str(p)}
                    for m, p in mirrors.items()]}
    return LockmasterConfig.model_validate(data)


async def installable(url: str, key: Path, codename: str, release: str) -> bool:
    try:
        await asyncio.to_thread(apt_get_check, url, key, codename,
                                download=[(PACKAGE, release, "all")])
        return True
    except VerificationError:
        return False


class Merges:
    """When each change's merge was announced (the local review system announces it right
    after it merged, as Gerrit's change-merged)."""

    def __init__(self, driver: LocalReviewDriver) -> None:
        self.at: dict[int, float] = {}
        self._announced_events: dict[int, asyncio.Event] = {}
        self._route = driver.on_merged
        driver.on_merged = self._announced

    def _event(self, number: int) -> asyncio.Event:
        return self._announced_events.setdefault(number, asyncio.Event())

    async def _announced(self, event: ReviewEvent) -> object:
        self.at[event.change or 0] = time.time()
        self._event(event.change or 0).set()
        assert self._route is not None
        return await self._route(event)

    async def wait(self, number: int, timeout: float = 900) -> float:
        await asyncio.wait_for(self._event(number).wait(), timeout)
        return self.at[number]


async def one_round(client: Client, config: LockmasterConfig, driver: LocalReviewDriver,
                    router: EventRouter, merges: Merges, mirror_urls: list[str], index: int,
                    path: str) -> dict[str, Any]:
    store = driver.store
    tip = await asyncio.to_thread(branch_files, store, PROJECT)
    changed = release_files(tip, 100 + index, time.time())
    release = version(changed["debian/changelog"])
    info = await asyncio.to_thread(store.upload, PROJECT, files=changed,
                                   subject=f"Release {release}")
    approved = time.time()
    if path == "gate":
        voted = await asyncio.to_thread(store.vote, info.number,
                                        {"Code-Review": 2, "Workflow": 1}, author="core")
        await router.route(ReviewEvent(
            type="comment-added", connection="local", project=PROJECT, branch="master",
            change=info.number, patchset=voted.patchset, commit=voted.commit, author="core",
            comment=f"Patch Set {voted.patchset}: Code-Review+2 Workflow+1",
            approvals={"Code-Review": 2, "Workflow": 1}))
    else:  # by hand, announced as Gerrit would
        await driver.submit(info.ref())
    merged_at = await merges.wait(info.number)
    key = config.publish_root / KEY_FILE
    seen: dict[str, float] = {}
    while len(seen) < len(mirror_urls):
        for url in mirror_urls:
            if url not in seen and key.exists() and await installable(
                    url, key, config.publishing.codename, release):
                seen[url] = time.time()
        await asyncio.sleep(0.2)
    done = max(seen.values())
    wid = change_workflow_id(config, PROJECT, info.number)
    result = await client.get_workflow_handle(wid, result_type=PublishResult).result()
    status = await Publications(client, config).show(PROJECT, info.number)
    steps = {s.name: (s.ended or 0) - (s.started or 0) for s in status.steps}
    total = done - merged_at
    prov = status.provenance
    return {"release": release, "ok": result.ok, "path": path,
            "published": prov.source.value if prov else None,
            "why": prov.reason if prov else None,
            "approved_to_merged": merged_at - approved if path == "gate" else None,
            "merged_to_installable": total,
            "build_step": steps["build"], "without_build_step": total - steps["build"],
            "publish": steps["publish"],
            "sync": {name: v for name, v in steps.items() if name.startswith("sync:")}}


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def summarize(results: list[dict[str, Any]], mirrors: list[str]) -> dict[str, Any]:
    return {
        "rounds": len(results),
        "published": sorted({str(r["published"]) for r in results}),
        "merged_to_installable": summary([r["merged_to_installable"] for r in results]),
        "build_step": summary([r["build_step"] for r in results]),
        "without_build_step": summary([r["without_build_step"] for r in results]),
        "publish": summary([r["publish"] for r in results]),
        "sync": {m: summary([r["sync"][f"sync:{m}"] for r in results]) for m in mirrors},
        "all_ok": all(r["ok"] for r in results),
    }


async def main(rounds: int, paths: list[str]) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    mirrors = {m: state / "mirrors" / m for m in ("near", "far")}
    for path in mirrors.values():
        path.mkdir(parents=True)
    logs_port = free_port()
    config = bench_config(state, logs_port, mirrors)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL, dev_server_log_level="error")
    servers = [LogServer(config.logs_root, "127.0.0.1", logs_port).start()]
    urls = []
    for path in mirrors.values():
        server = LogServer(path, "127.0.0.1", free_port()).start()
        servers.append(server)
        urls.append(f"http://127.0.0.1:{server.port}/deb/current")
    results: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
    load = [os.getloadavg()[0]]
    try:
        client = env.client
        drivers = review_drivers(config)
        driver = drivers["local"]
        assert isinstance(driver, LocalReviewDriver)
        await asyncio.to_thread(driver.store.create_project, PROJECT, files())
        router = EventRouter(config, client, drivers)
        async with contextlib.AsyncExitStack() as stack:
            for worker in (orchestrator_worker(client, config, drivers),
                           executor_worker(client, config, drivers),
                           publisher_worker(client, config, drivers)):
                await stack.enter_async_context(worker)
            merges = Merges(driver)  # after the orchestrator wired the announcements
            from lockmaster.starters.nodepool import ensure_pools

            await ensure_pools(client, config)
            # The paths take turns, so neither gets all the warm (or the busy) rounds.
            for index, path in enumerate(p for _ in range(rounds) for p in paths):
                result = await one_round(client, config, driver, router, merges, urls, index,
                                         path)
                load.append(os.getloadavg()[0])
                print(f"round {index + 1} ({path}): {json.dumps(result)}", flush=True)
                results[path].append(result)
    finally:
        for server in servers:
            server.stop()
        await env.shutdown()
        # gpg left an agent for the benchmark's key.
        await asyncio.to_thread(subprocess.run, ["gpgconf", "--homedir", str(state / "gnupg"),
                                                 "--kill", "all"], capture_output=True)
    return {
        "mirrors": len(mirrors), "cores": os.cpu_count(),
        "load_average_1min": {"min": min(load), "max": max(load)},
        **{path: summarize(runs, list(mirrors)) for path, runs in results.items()},
        "runs": results,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per path")
    parser.add_argument("--path", choices=["gate", "rebuild", "both"], default="both",
                        help="gate: promote the gate's build; rebuild: merged by hand")
    args = parser.parse_args()
    chosen = ["gate", "rebuild"] if args.path == "both" else [args.path]
    out = asyncio.run(main(args.rounds, chosen))
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
