"""Benchmark: web API latency with 200 items in the gate queues and 100,000 builds in the results
database (issue 16; docs/benchmarks.md, "Issue 16: web").

- A results database (SQLite file by default, or --url, e.g. PostgreSQL) is filled with N builds
  (default 100,000: 20 projects, 25 jobs, check/gate/post, over 90 days, ~12% failed, 4% of
  them with a known failure) and their buildsets, by bulk inserts through SQLAlchemy Core into
  the results package's own tables (the per-record path, ResultsDB.record_builds, is what
  the tests use; here it would only be slower to fill).
- The real web service (lockmaster.web.server.WebServer: its own thread and event loop) serves
  it. /api/status gets its data from the workflows' `status` queries; here
  lockmaster.web.sources' pipelines/pools/brokers answer a canned snapshot of 4 gate queues
  with 50 items each (5 jobs per item, in every state), so the status view, the filters, the
  estimates from the results database and the JSON all run for real, without Temporal.
- aiohttp's client asks each endpoint --requests times, one request at a time, over HTTP, after
  --warmup requests; p50/p95/max are printed and written to bench/results/web_api.json.

Run: .venv/bin/python -m bench.web_api [--builds 100000] [--requests 300] [--url URL]
     [--postgres: a throwaway PostgreSQL server, started as the tests start theirs]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, insert, select

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.gate import ItemView, JobView, QueueStatus
from lockmaster.results import ResultsDB
from lockmaster.results.schema import Build, BuildKnownFailure, Buildset
from lockmaster.starters.status import PipelineStatus
from lockmaster.web import sources
from lockmaster.web.server import WebServer

PROJECTS = [f"org/project-{n:02d}" for n in range(20)]
JOBS = ["merge-check", *(f"job-{n:02d}" for n in range(24))]
ITEM_JOBS = JOBS[:5]
QUEUES = [f"queue-{n}" for n in range(4)]
PIPELINES = ["check", "gate", "post"]
SIGNATURES = [f"bug-{n}" for n in range(12)]
LOGS_URL = "http://logs.example"
CHUNK = 5000


def config(state: Path) -> LockmasterConfig:
    jobs = [{"name": job, "run": "true"} for job in ITEM_JOBS]
    graph = ["merge-check", *({"name": job, "dependencies": ["merge-check"]}
                              for job in ITEM_JOBS[1:])]
    return LockmasterConfig.model_validate({
        "state-dir": str(state),
        "connections": {"local": {"driver": "local"}},
        "logs": {"url": LOGS_URL},
        "nodes": {"providers": [{"name": "local", "driver": "local",
                                 "pools": [{"name": "main", "labels": ["local"]}]}]},
        "pipelines": [
            {"name": "check", "trigger": [{"event": "patchset-created"}]},
            {"name": "gate", "manager": "dependent",
             "trigger": [{"event": "comment-added", "approval": {"Workflow": 1}}]}],
        "jobs": jobs,
        "projects": [{"name": p, "connection": "local", "queue": QUEUES[i % len(QUEUES)],
                      "pipelines": {"gate": {"jobs": graph}, "check": {"jobs": graph}}}
                     for i, p in enumerate(PROJECTS)],
    })


def _result(rng: random.Random) -> str:
    roll = rng.random()
    return ("SUCCESS" if roll < 0.85 else "FAILURE" if roll < 0.95 else "TIMED_OUT"
            if roll < 0.97 else "NODE_FAILURE" if roll < 0.98 else "RETRY" if roll < 0.99
            else "ABORTED")


def fill(db: ResultsDB, count: int, seed: int = 16) -> dict[str, Any]:
    """`count` builds, 5 per buildset, ending over the last 90 days."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    started = time.perf_counter()
    recorded = now
    builds: list[dict[str, Any]] = []
    buildsets: list[dict[str, Any]] = []
    matches: list[dict[str, Any]] = []
    seq = 0
    with db.engine.begin() as conn:
        for set_seq in range(1, count // 5 + 1):
            project = rng.choice(PROJECTS)
            pipeline = rng.choices(PIPELINES, weights=(6, 3, 1))[0]
            queue = QUEUES[PROJECTS.index(project) % len(QUEUES)] if pipeline == "gate" \
                else None
            change, patchset = rng.randint(1, 30_000), rng.randint(1, 5)
            end = now - timedelta(seconds=rng.uniform(0, 90 * 86400))
            common = {"connection": "gerrit", "project": project, "branch": "main",
                      "change": change, "patchset": patchset,
                      "ref": f"refs/changes/{change % 100:02d}/{change}/{patchset}",
                      "commit": None, "pipeline": pipeline, "queue": queue,
                      "changes": [], "changes_key": f"{change},{patchset}",
                      "recorded_at": recorded}
            set_uuid = f"{rng.getrandbits(128):032x}"
            results = []
            for job in rng.sample(JOBS, 5):
                seq += 1
                uuid = f"{rng.getrandbits(128):032x}"
                result = _result(rng)
                results.append(result)
                duration = rng.uniform(60, 1800) * (1.5 if job.endswith("7") else 1.0)
                ended = end - timedelta(seconds=rng.uniform(0, 60))
                log_path = f"{change % 100:02d}/{change}/{patchset}/{pipeline}/{job}/{uuid[:7]}"
                builds.append({**common, "seq": seq, "uuid": uuid, "buildset_uuid": set_uuid,
                               "buildset_try": 0, "job": job, "result": result, "attempt": 1,
                               "voting": True, "final": result != "RETRY",
                               "start_time": ended - timedelta(seconds=duration),
                               "end_time": ended, "duration": duration,
                               "node_provider": "cloud", "node_label": "ubuntu",
                               "node_name": f"node-{seq}", "log_url": f"{LOGS_URL}/{log_path}/",
                               "message": None})
                if result != "SUCCESS" and rng.random() < 0.4:
                    matches.append({"build_uuid": uuid, "signature": rng.choice(SIGNATURES),
                                    "bug": "https://bugs.example/1", "result": result,
                                    "job": job, "project": project, "end_time": ended})
            failed = any(r != "SUCCESS" for r in results)
            buildsets.append({**common, "seq": set_seq, "uuid": set_uuid, "change_url": None,
                              "result": "FAILURE" if failed else "SUCCESS", "message": None,
                              "reason": None, "start_time": end - timedelta(minutes=30),
                              "end_time": end,
                              "restarted_behind": rng.randint(1, 20) if failed and queue
                              else 0})
            if len(builds) >= CHUNK:
                conn.execute(insert(Build), builds)
                conn.execute(insert(Buildset), buildsets)
                if matches:
                    conn.execute(insert(BuildKnownFailure), matches)
                builds, buildsets, matches = [], [], []
        for table, rows in ((Build, builds), (Buildset, buildsets),
                            (BuildKnownFailure, matches)):
            if rows:
                conn.execute(insert(table), rows)
    if db.dialect == "sqlite":
        with db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    elif db.dialect == "postgresql":
        with db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    with db.reading() as conn:
        total = conn.scalar(select(func.count()).select_from(Build))
    return {"builds": total, "seconds": round(time.perf_counter() - started, 1)}


def snapshot(now: float) -> list[PipelineStatus]:
    """4 gate queues x 50 items, 5 jobs each, in every state."""
    rng = random.Random(200)
    queues = []
    number = 40_000
    for queue in QUEUES:
        items = []
        keys: list[str] = []
        for position in range(50):
            number += 1
            project = rng.choice([p for i, p in enumerate(PROJECTS)
                                  if QUEUES[i % len(QUEUES)] == queue])
            key = f"{number},1"
            states = (["SUCCESS", "running", "running", "queued", "waiting"] if position < 10
                      else ["waiting"] * 5)
            jobs = [JobView(name=job, voting=True, state=state,
                            attempt=0 if state == "waiting" else 1,
                            elapsed=rng.uniform(10, 600) if state == "running" else None,
                            estimated=600.0,
                            log_url=f"{LOGS_URL}/x/{number}/{job}/" if state != "waiting"
                            else None)
                    for job, state in zip(ITEM_JOBS, states, strict=True)]
            items.append(ItemView(change=key, project=project, branch="main",
                                  active=position < 20, failing=position == 7,
                                  changes=" ".join([*keys[-20:], key]), merge="ok",
                                  enqueued_at=now - 60 * (50 - position), jobs=jobs))
            keys.append(key)
        queues.append(QueueStatus(queue=queue, pipeline="gate", window=20, idle=False,
                                  busy=True, items=items))
    return [PipelineStatus(pipeline="gate", manager="dependent", queues=queues),
            PipelineStatus(pipeline="check", manager="independent")]


def canned_sources(found: list[PipelineStatus]) -> None:
    """The seam: the status handler asks lockmaster.web.sources; these answer without
    Temporal."""
    async def pipelines(ctx: Any) -> list[PipelineStatus]:
        return found

    async def empty(ctx: Any) -> tuple[list[Any], dict[str, str]]:
        return [], {}

    sources.pipelines = pipelines  # type: ignore[assignment]
    sources.pools = empty  # type: ignore[assignment]
    sources.brokers = empty  # type: ignore[assignment]


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(p95 * 1000, 1), "max_ms": round(ordered[-1] * 1000, 1),
            "n": len(ordered)}


async def measure(base: str, paths: dict[str, list[str]], requests: int, warmup: int
                  ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        for name, urls in paths.items():
            first = time.perf_counter()
            async with session.get(base + urls[0]) as response:
                body = await response.read()
                if response.status != 200:
                    raise SystemExit(f"{urls[0]}: {response.status} {body[:300]!r}")
            cold = time.perf_counter() - first
            for index in range(warmup):
                async with session.get(base + urls[index % len(urls)]) as response:
                    await response.read()
            samples, sizes = [], []
            for index in range(requests):
                url = base + urls[index % len(urls)]
                started = time.perf_counter()
                async with session.get(url) as response:
                    body = await response.read()
                samples.append(time.perf_counter() - started)
                sizes.append(len(body))
                if response.status != 200:
                    raise SystemExit(f"{url}: {response.status} {body[:300]!r}")
            out[name] = {**_stats(samples), "cold_ms": round(cold * 1000, 1),
                         "bytes": int(statistics.median(sizes)), "urls": urls}
            print(f"{name:28s} p50 {out[name]['p50_ms']:7.1f} ms  p95 {out[name]['p95_ms']:7.1f}"
                  f" ms  max {out[name]['max_ms']:7.1f} ms  (first {out[name]['cold_ms']} ms, "
                  f"{out[name]['bytes']} bytes)", flush=True)
    return out


@contextlib.contextmanager
def _postgres(tmp: Path) -> Iterator[str]:
    from tests.fixtures.postgres import fresh_database, start_postgres, stop_postgres

    directory = tmp / "pg"
    directory.mkdir()
    tmp.chmod(0o755)  # the server runs as nobody when this runs as root
    server, proc = start_postgres(directory)
    try:
        yield server.url(fresh_database(server))
    finally:
        stop_postgres(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--url", help="results database URL (default: a new SQLite file)")
    parser.add_argument("--postgres", action="store_true",
                        help="start a throwaway PostgreSQL (Debian's, as the tests do) and use it")
    parser.add_argument("--out", type=Path, default=Path("bench/results/web_api.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lm-web-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        url = args.url or f"sqlite:///{Path(tmp) / 'results.sqlite'}"
        if args.postgres:
            url = stack.enter_context(_postgres(Path(tmp)))
        db = ResultsDB.open(url)
        with db.reading() as conn:
            there = conn.scalar(select(func.count()).select_from(Build))
        filled = {"builds": there, "seconds": 0.0} if there else fill(db, args.builds)
        print(f"results database ({db.dialect}): {filled['builds']} builds "
              f"(filled in {filled['seconds']} s)", flush=True)
        found = snapshot(time.time())
        canned_sources(found)
        server = WebServer(config(Path(tmp) / "state"), listen="127.0.0.1", port=0,
                           results=db).start()
        since = (datetime.now(UTC) - timedelta(days=7)).date().isoformat()
        paths = {
            "/api/status (200 items)": ["/api/status"],
            "/api/builds filtered": [
                f"/api/builds?project={PROJECTS[n]}&result=FAILURE" for n in range(0, 20, 3)]
            + [f"/api/builds?job={JOBS[n]}&pipeline=gate" for n in range(1, 25, 4)]
            + [f"/api/builds?project={PROJECTS[n]}&job={JOBS[n]}&since={since}"
               for n in range(5)],
            "/api/builds newest page": ["/api/builds"],
            "/api/builds?change=": [f"/api/builds?change={n}" for n in range(100, 30_000, 997)],
            # Not in the target; measured to know what they cost.
            "/api/signatures (30 days)": ["/api/signatures"],
            "/api/failures (30 days)": ["/api/failures"],
        }
        try:
            numbers = asyncio.run(measure(server.url, paths, args.requests, args.warmup))
        finally:
            server.stop()
            db.close()
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "database": db.dialect,
              "builds": filled["builds"], "fill_seconds": filled["seconds"],
              "queue_items": sum(len(q.items) for p in found for q in p.queues),
              "requests": args.requests, "endpoints": numbers}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
