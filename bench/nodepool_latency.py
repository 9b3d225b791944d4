"""Benchmark: the node pool's handover latency and launch rate against the fake cloud (issue 4).

Everything is real but the cloud's compute, image and network services: Keystone (from PyPI, in
.venv-keystone), openstacksdk, the Temporal dev server, the orchestrator and launcher workers, the
pool workflow (`nodepool/cloud/main`), the executor's client (`PooledNodes`) and OpenSSH's sshd,
which answers for every "VM" (the fake gives all servers 127.0.0.1; the label's connection-port is
the sshd's). Servers boot in `--boot-delay` seconds (default 1).

Measures, each `--runs` times on a fresh pool:
- ready: request -> nodes handed over when a ready node exists (min-ready `--min-ready`, one
  request at a time, `--ready` requests): `PooledNodes.acquire_nodeset` for one node, split into
  the `request_nodes` update round trip and the SSH connection to the node;
- boot: the same with min-ready 0, so every request waits for a launch (`--boot` requests), split
  into the launch's steps (from the instrumented launcher and the pool's history);
- rate: `--queued` requests queued at once on a pool with max-servers `--max-servers`, each held
  `--hold` seconds then released (single use: every request boots a server), through
  `PooledNodes.acquire_nodeset` as an executor does; nodes handed over per minute, total time,
  failed requests, and the most servers that existed at once (sampled every 20 ms);
- rate-batched: the same load, but the requesters learn what is fulfilled from one `status`
  query every 0.2 s for all of them instead of the client's own waiting (before issue 14 each
  request polled `request_status`; now the client's waiters share one `request_statuses` query
  per round, backing off while nothing changes): the pool's and launcher's capacity.

The dev server's and the Temporal client's logs go to a file (`--log`, else a temporary one);
how often the pool workflow was too busy (updates aborted or refused, queries refused) is counted
per measurement, and so are the workflow queries this process sent, by name (`queries_sent`).

Run: .venv/bin/python -m bench.nodepool_latency (about 2-3 minutes; `--runs 2` for ranges).
Shorter: --ready 20 --boot 5 --queued 60 --only ready boot rate.
Results: printed, and written to bench/results/nodepool_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from bench.nodepool_harness import (
    LABEL,
    QUERIES,
    OutputLog,
    TimedLauncher,
    TimedNodes,
    bench_config,
    count_queries,
    dist,
    pool_history,
    pool_status,
    ready_count,
    reset_cloud,
    running_pool,
    until,
)
from lockmaster.model.nodes import (
    NodeRequest,
    NodeRequestStatus,
    RequestState,
)
from lockmaster.nodes.base import NodeError, Nodeset
from lockmaster.starters.nodepool import NodePools, PoolError
from lockmaster.temporal import search_attributes
from lockmaster.temporal.devserver import temporal_binary
from tests.fakes.openstack_cloud import FakeOpenStack
from tests.fixtures.openstack import running_fake_cloud
from tests.fixtures.sshd import SSHServer, running_sshd

BATCHED_POLL = 0.2
SCENARIOS = ["ready", "boot", "rate", "rate-batched"]
RATE_LIMIT = 240.0  # seconds for all the queued requests of a rate measurement


async def measure_ready(client: Client, cloud_file: Path, sshd: SSHServer, fake: FakeOpenStack,
                        tmp: Path, *, requests: int, min_ready: int, boot_delay: float
                        ) -> dict[str, Any]:
    reset_cloud(fake, boot_delay)
    config = bench_config(tmp, cloud_file, sshd, min_ready=min_ready,
                          max_servers=2 * min_ready + 4)
    launcher = TimedLauncher()
    total: list[float] = []
    update: list[float] = []
    connect: list[float] = []
    waited = 0
    async with running_pool(client, config, fake, launcher) as ops:
        source = TimedNodes(client, config, config.state_path)

        async def a_ready_node() -> bool:
            return ready_count(await pool_status(ops)) > 0

        await until(lambda: _all_ready(ops, min_ready), 120, f"{min_ready} ready nodes")
        for i in range(requests + 1):  # the first is a warm-up
            if not await a_ready_node():
                waited += 1
                await until(a_ready_node, 60, "a ready node")
            request_id = f"ready{i}"
            started = time.time()
            nodeset = await source.acquire_nodeset([LABEL], request_id)
            took = time.time() - started
            await source.release_nodeset(nodeset)
            if i == 0:
                continue
            marks = source.marks[request_id]
            total.append(took)
            update.append(marks["submit"])
            connect.append(marks["connect"])
    return {"requests": requests, "min_ready": min_ready, "waits_for_a_ready_node": waited,
            "handover_s": dist(total), "submit_signal_s": dist(update),
            "ssh_connect_s": dist(connect),
            "before_ssh_s": dist([t - c for t, c in zip(total, connect, strict=True)])}


async def _all_ready(ops: NodePools, count: int) -> bool:
    return ready_count(await pool_status(ops)) >= count


async def measure_boot(client: Client, cloud_file: Path, sshd: SSHServer, fake: FakeOpenStack,
                       tmp: Path, *, requests: int, boot_delay: float) -> dict[str, Any]:
    reset_cloud(fake, boot_delay)
    config = bench_config(tmp, cloud_file, sshd, min_ready=0, max_servers=10)
    launcher = TimedLauncher()
    total: list[float] = []
    steps: dict[str, list[float]] = {}
    async with running_pool(client, config, fake, launcher) as ops:
        source = TimedNodes(client, config, config.state_path)
        handed: list[tuple[str, str, float, float]] = []  # request, node, started, handed over
        for i in range(requests + 1):  # the first is a warm-up
            request_id = f"boot{i}"
            started = time.time()
            nodeset = await source.acquire_nodeset([LABEL], request_id)
            handed.append((request_id, nodeset.nodes[0].info.name, started, time.time()))
            await source.release_nodeset(nodeset)
            # Wait until the used node is gone so each request starts from an empty pool.
            await until(lambda: not fake.live_servers(), 30, "the used node deleted")
        history = await pool_history(client, ops.handle(ops.specs[0]).id)
    for request_id, node_id, started, done in handed[1:]:
        launch, pool = launcher.launches[node_id], history.get(node_id, {})
        marks = source.marks[request_id]
        total.append(done - started)
        parts = {
            "request signal": marks["submit"],
            "launch activity scheduled -> started":
                launch["start"] - pool.get("scheduled", launch["start"]),
            "request sent -> launch activity started": launch["start"] - started,
            "create_server (openstacksdk calls)": launch["created"] - launch["start"],
            f"BUILD -> ACTIVE seen ({boot_delay:g} s boot + poll)":
                launch["active"] - launch["created"],
            "SSH probe (host key)": launch["done"] - launch["active"],
            "launch done -> pool task fulfils request":
                pool.get("fulfilled", launch["done"]) - launch["done"],
            "fulfilled -> executor's query sees it":
                marks["answered"] - pool.get("fulfilled", launch["done"]),
            "SSH connect": marks["connect"],
        }
        for name, value in parts.items():
            steps.setdefault(name, []).append(value)
    return {"requests": requests, "handover_s": dist(total),
            "steps_p50_s": {k: round(statistics.median(v), 3) for k, v in steps.items()}}


async def measure_rate(client: Client, cloud_file: Path, sshd: SSHServer, fake: FakeOpenStack,
                       tmp: Path, *, queued: int, max_servers: int, hold: float,
                       boot_delay: float, batched: bool = False) -> dict[str, Any]:
    """`batched`: the requesters ask as PooledNodes does (the `submit_request` signal) but learn
    what is fulfilled from one `status` query every BATCHED_POLL seconds for all of them,
    instead of the client's own `request_statuses` rounds."""
    reset_cloud(fake, boot_delay)
    config = bench_config(tmp, cloud_file, sshd, min_ready=0, max_servers=max_servers)
    launcher = TimedLauncher()
    most = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal most
        while not stop.is_set():
            most = max(most, len(fake.live_servers()))
            await asyncio.sleep(0.02)

    async with running_pool(client, config, fake, launcher) as ops:
        source = TimedNodes(client, config, config.state_path)
        watcher = asyncio.create_task(watch())
        handed: list[float] = []
        failed: list[str] = []

        spec = source.specs[0]
        handle = ops.handle(spec)
        waiting: dict[str, asyncio.Future[NodeRequestStatus]] = {}

        async def poll() -> None:
            while True:
                await asyncio.sleep(BATCHED_POLL)
                try:
                    status = await pool_status(ops)
                except RPCError:
                    continue
                nodes = {n.id: n for n in status.nodes}
                for request in status.requests:
                    future = waiting.get(request.id)
                    if request.state is RequestState.FULFILLED and future and not future.done():
                        future.set_result(NodeRequestStatus(
                            id=request.id, state=request.state,
                            nodes=[nodes[n] for n in request.nodes if n in nodes]))

        async def acquire_batched(request_id: str, position: int) -> Nodeset:
            waiting[request_id] = asyncio.get_running_loop().create_future()
            request = NodeRequest(id=request_id, labels=[LABEL], position=position,
                                  lease_seconds=source.lease)
            await source._submit(handle, request)
            status = await waiting[request_id]
            if status.state is not RequestState.FULFILLED:
                raise NodeError(f"{request_id}: {status.state.value} {status.reason}")
            return await source._take(spec, request_id, status)

        poller = asyncio.create_task(poll()) if batched else None

        async def job(i: int) -> None:
            try:
                if batched:
                    nodeset = await acquire_batched(f"rate{i}", i)
                else:
                    nodeset = await source.acquire_nodeset([LABEL], f"rate{i}", position=i)
            except Exception as exc:  # a build would report NODE_FAILURE
                code = getattr(exc, "status", None)
                failed.append(f"{type(exc).__name__}{f' {code.name}' if code else ''}: {exc}")
                return
            handed.append(time.time())
            await asyncio.sleep(hold)
            await source.release_nodeset(nodeset)

        started = time.time()
        try:
            await asyncio.wait_for(asyncio.gather(*(job(i) for i in range(queued))), RATE_LIMIT)
        except TimeoutError:  # the pool stopped serving (see pool_error)
            failed.append(f"not done within {RATE_LIMIT:g} s")
        released = time.time()
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        with contextlib.suppress(TimeoutError):  # nodes of failed requests wait for their lease
            await until(lambda: not fake.live_servers(), 30, "every server deleted", 0.02)
        gone = time.time()
        left = len(fake.live_servers())
        stop.set()
        await watcher
        pool_error = None
        try:
            launch_failures: int | None = (await pool_status(ops)).launch_failures
        except PoolError as exc:  # e.g. its workflow task fails: the pool is stuck
            pool_error, launch_failures = str(exc), None
        created = fake.created_count
        runs = 0
        async for _ in client.list_workflows(f"WorkflowId = '{ops.handle(ops.specs[0]).id}'"):
            runs += 1
    launches = [m for m in launcher.launches.values() if "done" in m]
    last = max(handed, default=released)
    return {
        "queued": queued, "max_servers": max_servers, "hold_s": hold, "batched": batched,
        "requests_failed": len(failed), "failures": sorted(set(failed))[:5],
        "servers_created": created, "launches_ok": int(sum(m["ok"] for m in launches)),
        "launch_failures": launch_failures, "pool_error": pool_error,
        "most_servers_at_once": most,
        "total_s": round(released - started, 2),
        "last_handover_s": round(last - started, 2),
        "until_all_deleted_s": round(gone - started, 2) if not left else None,
        "servers_left_30s_after_release": left,
        "launches_per_minute": round(len(handed) / (last - started) * 60, 1),
        "request_to_handover_s": dist([t - started for t in handed]),
        "launch_activity_s": dist([m["done"] - m["start"] for m in launches]),
        "create_server_s": dist([m["created"] - m["start"] for m in launches if "created" in m]),
        "build_to_active_seen_s": dist([m["active"] - m["created"] for m in launches
                                        if "active" in m]),
        "ssh_probe_s": dist([m["done"] - m["active"] for m in launches if "active" in m]),
        "delete_activity_s": dist(launcher.deletes),
        "pool_workflow_runs": runs,
        # How many launches started and how many nodes were handed over in each 5 s.
        "launches_started_per_5s": _buckets([m["start"] - started for m in launches]),
        "handovers_per_5s": _buckets([t - started for t in handed]),
    }


def _buckets(offsets: list[float], width: float = 5.0) -> list[int]:
    counts = [0] * (int(max(offsets, default=0) // width) + 1)
    for offset in offsets:
        counts[int(offset // width)] += 1
    return counts


# --- main ----------------------------------------------------------------------------------------

async def main(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="lockmaster-bench-nodepool-"))
    results: dict[str, Any] = {"boot_delay_s": args.boot_delay, "runs": []}
    log = OutputLog(Path(args.log) if args.log else tmp / "output.log")
    try:
        with log, running_fake_cloud(tmp / "keystone") as cloud, \
                running_sshd(tmp / "sshd") as sshd:
            clouds_file = cloud.clouds_yaml(tmp / "openstack")
            env = await WorkflowEnvironment.start_local(
                dev_server_existing_path=temporal_binary(),
                data_converter=pydantic_data_converter,
                search_attributes=search_attributes.ALL, dev_server_log_level="error",
            )
            try:
                results["setup_s"] = round(time.monotonic() - began, 1)
                for run in range(args.runs):
                    one: dict[str, Any] = {}
                    for name in args.only or SCENARIOS:
                        at, since = time.monotonic(), log.mark()
                        queried = QUERIES.copy()
                        if name == "ready":
                            one[name] = await measure_ready(
                                env.client, clouds_file, sshd, cloud.fake, tmp,
                                requests=args.ready, min_ready=args.min_ready,
                                boot_delay=args.boot_delay)
                        elif name == "boot":
                            one[name] = await measure_boot(
                                env.client, clouds_file, sshd, cloud.fake, tmp,
                                requests=args.boot, boot_delay=args.boot_delay)
                        else:
                            one[name] = await measure_rate(
                                env.client, clouds_file, sshd, cloud.fake, tmp,
                                queued=args.queued, max_servers=args.max_servers, hold=args.hold,
                                boot_delay=args.boot_delay, batched=name == "rate-batched")
                        one[name]["took_s"] = round(time.monotonic() - at, 1)
                        one[name]["temporal_noise"] = log.counts(since)
                        one[name]["queries_sent"] = dict(QUERIES - queried)
                        log.say(f"run {run + 1} {name}: {json.dumps(one[name])}")
                    results["runs"].append(one)
            finally:
                await env.shutdown()
    except BaseException:
        if log.path.exists():
            lines = log.path.read_text(errors="replace").splitlines()[-40:]
            print("\n".join([f"--- the end of {log.path} ---", *lines]), file=sys.stderr)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["bench_s"] = round(time.monotonic() - began, 1)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "nodepool_latency.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def table(results: dict[str, Any]) -> str:
    """Ranges over the runs, as docs/benchmarks.md shows them."""
    def span(values: list[float], unit: str = " s") -> str:
        lo, hi = min(values), max(values)
        return f"{lo:g}{unit}" if lo == hi else f"{lo:g}\u2013{hi:g}{unit}"

    runs = results["runs"]
    rows = ["| measure | p50 | p95 |", "| --- | --- | --- |"]
    for name, key, what in (("ready", "handover_s", "ready node: request -> handed over"),
                            ("ready", "before_ssh_s", "ready node: before the SSH connect"),
                            ("ready", "submit_signal_s", "ready node: request signal"),
                            ("ready", "ssh_connect_s", "ready node: SSH connect"),
                            ("boot", "handover_s", "must boot: request -> handed over")):
        found = [r[name][key] for r in runs if name in r]
        if found:
            rows.append(f"| {what} | {span([f['p50'] for f in found])} | "
                        f"{span([f['p95'] for f in found])} |")
    for name in ("rate", "rate-batched"):
        rate = [r[name] for r in runs if name in r]
        if rate:
            rows.append("")
            rows.append(
                f"{name}: {span([r['launches_per_minute'] for r in rate], '')} nodes/min; "
                f"{rate[0]['queued']} requests handed over in "
                f"{span([r['last_handover_s'] for r in rate])}; failed "
                f"{span([r['requests_failed'] for r in rate], '')}; most servers at once "
                f"{span([r['most_servers_at_once'] for r in rate], '')} "
                f"(max-servers {rate[0]['max_servers']})")
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--ready", type=int, default=50, help="requests with a ready node")
    parser.add_argument("--min-ready", type=int, default=8)
    parser.add_argument("--boot", type=int, default=10, help="requests that wait for a boot")
    parser.add_argument("--queued", type=int, default=200, help="requests queued at once")
    parser.add_argument("--max-servers", type=int, default=50)
    parser.add_argument("--hold", type=float, default=0.5, help="seconds each queued job holds")
    parser.add_argument("--boot-delay", type=float, default=1.0, help="the fake's BUILD time")
    parser.add_argument("--only", nargs="*", choices=SCENARIOS)
    parser.add_argument("--log", help="keep the dev server's and the client's log here")
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
        raise SystemExit("needs root and OpenSSH's sshd (the nodes' SSH is a real sshd)")
    count_queries()
    found = asyncio.run(main(parser.parse_args()))
    print(table(found))
    print(f"bench took {found['bench_s']} s (setup {found['setup_s']} s)")
