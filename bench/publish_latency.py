"""Benchmark: from a change-merged event to the package being installable from every mirror
(issue 6), excluding the package build itself.

Everything is real: the Temporal dev server; the orchestrator (publish queue and publish
workflows), executor (the rebuild from the merged commit: dpkg-buildpackage and rpmbuild through
pkgtool.py) and publisher (reprepro, createrepo_c, gpg, rsync) workers; the log server serving the
build's artifacts; two directory mirrors each served over HTTP. Each round merges a new release
of the example package (lockmaster/demo/packages/hello) in the local review system, announces
the merge as Gerrit would (change-merged), and polls both mirrors with a client that trusts only
the repository key (`apt-get update` + `apt-get download` of the new version) until both serve
it. Measured per round:

- merged -> installable from both mirrors (end to end, as a user sees it);
- the rebuild (the build step of `publish/<project>/<change>`: excluded from the target);
- the rest: merged -> installable minus the rebuild (target: p50 < 30 s);
- and its parts from the publication's steps: publish into the stable repository (sign, verify,
  switch), sync of each mirror.

Run: .venv/bin/python -m bench.publish_latency [--rounds 5] (about 2 minutes).
Results: printed, and written to bench/results/publish_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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
from tests.deployment import make_config

RESULTS = Path(__file__).parent / "results" / "publish_latency.json"
PROJECT = "bench/lockmaster-hello"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_config(state: Path, logs_port: int, mirrors: dict[str, Path]) -> LockmasterConfig:
    config = make_config(state, projects=[], prefix=f"b-{uuid.uuid4().hex[:8]}", jobs=[
        {"name": "package-build", "package": {"step": "build"}, "nodeset": "local",
         "timeout": 900}])
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["logs"] = {"url": f"http://127.0.0.1:{logs_port}"}
    data["projects"] = [{"name": PROJECT, "connection": "local",
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


async def one_round(client: Client, config: LockmasterConfig, driver: LocalReviewDriver,
                    router: EventRouter, mirror_urls: list[str], index: int) -> dict[str, Any]:
    store = driver.store
    tip = await asyncio.to_thread(branch_files, store, PROJECT)
    changed = release_files(tip, 100 + index, time.time())
    release = version(changed["debian/changelog"])
    info = await asyncio.to_thread(store.upload, PROJECT, files=changed,
                                   subject=f"Release {release}")
    merged_commit = await asyncio.to_thread(store.submit, info.ref())
    merged_at = time.time()
    await router.route(ReviewEvent(
        type="change-merged", connection="local", project=PROJECT, branch="master",
        change=info.number, patchset=info.patchset, commit=info.commit, newrev=merged_commit))
    key = config.publish_root / "lockmaster-archive-key.asc"
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
    return {"release": release, "ok": result.ok, "merged_to_installable": total,
            "rebuild": steps["build"], "without_rebuild": total - steps["build"],
            "publish": steps["publish"],
            "sync": {name: v for name, v in steps.items() if name.startswith("sync:")}}


async def main(rounds: int) -> dict[str, Any]:
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
    results = []
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
            from lockmaster.starters.nodepool import ensure_pools

            await ensure_pools(client, config)
            for index in range(rounds):
                result = await one_round(client, config, driver, router, urls, index)
                print(f"round {index}: {json.dumps(result)}", flush=True)
                results.append(result)
    finally:
        for server in servers:
            server.stop()
        await env.shutdown()
        # gpg left an agent for the benchmark's key.
        await asyncio.to_thread(subprocess.run, ["gpgconf", "--homedir", str(state / "gnupg"),
                                                 "--kill", "all"], capture_output=True)

    def summary(values: list[float]) -> dict[str, float]:
        return {"p50": round(statistics.median(values), 3), "min": round(min(values), 3),
                "max": round(max(values), 3)}

    return {
        "rounds": rounds, "mirrors": len(mirrors),
        "merged_to_installable": summary([r["merged_to_installable"] for r in results]),
        "rebuild": summary([r["rebuild"] for r in results]),
        "without_rebuild": summary([r["without_rebuild"] for r in results]),
        "publish": summary([r["publish"] for r in results]),
        "sync": {m: summary([r["sync"][f"sync:{m}"] for r in results]) for m in mirrors},
        "all_ok": all(r["ok"] for r in results),
        "runs": results,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    out = asyncio.run(main(args.rounds))
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
