"""Fault-injection harness (issue 15): lockmaster as separate OS processes against a fake Gerrit,
with workers killed, the Temporal dev server restarted, Gerrit down, a TE host down and an
executor's disk lost, then the invariants checked. See docs/reliability.md.

Run: .venv/bin/python -m bench.chaos [--quick] [--kills N] [--outage SECONDS] [--seed S]
Results: printed, and written to bench/results/chaos.json; exit 1 if an invariant fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import chaos_checks as checks

try:  # the fake Gerrit (tests/fakes) needs the test dependencies (aiohttp)
    from bench.chaos_gerrit import ChaosGerrit
except ModuleNotFoundError as missing:
    raise SystemExit(
        f"bench.chaos needs the test dependencies ({missing.name} is not installed): run "
        "./scripts/test once, or .venv/bin/pip install -e '.[test]'") from None
from bench.chaos_procs import Roles, descendants
from bench.chaos_workload import PKG, Planned, config_data, create_repos, plan, run_workload
from lockmaster.temporal.devserver import DevServer
from tests.fakes.gerrit import gerrit_connection
from tests.gitrepos import ReviewSite
from tests.ports import free_port, restartable_port

RESULTS = Path(__file__).parent / "results" / "chaos.json"


@dataclass
class Faults:
    kills: list[dict[str, Any]] = field(default_factory=list)
    server_restarts: list[dict[str, float]] = field(default_factory=list)
    gerrit_outage: dict[str, float] = field(default_factory=dict)
    te_host_down: dict[str, float] = field(default_factory=dict)
    disk_lost: dict[str, Any] = field(default_factory=dict)
    unexpected_exits: list[str] = field(default_factory=list)
    stream_drops: list[float] = field(default_factory=list)


@dataclass
class Harness:
    args: argparse.Namespace
    work: Path
    site: ReviewSite
    fake: ChaosGerrit
    server: DevServer
    roles: Roles
    executor_state: Path
    log_store: str
    faults: Faults = field(default_factory=Faults)
    held: set[str] = field(default_factory=set)  # roles a fault keeps down
    kill_order: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def at(self) -> float:
        return round(time.time() - self.started, 1)

    # --- faults -------------------------------------------------------------------------------

    async def restart_server(self) -> None:
        t0 = time.time()
        process = self.server.process
        if process is not None and process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        await self.server.start(timeout=120)
        self.faults.server_restarts.append({"at": self.at(), "seconds": round(time.time() - t0, 1)})
        print(f"[{self.at():7.1f}] dev server restarted ({time.time() - t0:.1f}s)", flush=True)

    async def kill_one(self, rng: random.Random) -> None:
        # Each role in turn (a shuffled round), so every one is killed about as often.
        if not self.kill_order:
            self.kill_order = list(self.roles.roles)
            rng.shuffle(self.kill_order)
        name = next((n for n in self.kill_order if n not in self.held), None)
        if name is None:
            return
        self.kill_order.remove(name)
        role = self.roles.roles[name]
        if name == "executor":  # mid-job when there is one: wait a little for a job to run
            for _ in range(40):
                if role.process is not None and descendants(role.process.pid):
                    break
                await asyncio.sleep(0.5)
        under = role.kill()
        await asyncio.sleep(0.5)
        role.start()
        self.faults.kills.append({"at": self.at(), "role": role.name, "with": under})
        print(f"[{self.at():7.1f}] SIGKILL {role.name} and {under} processes under it "
              "(restarted)", flush=True)

    async def gerrit_outage(self, seconds: float) -> None:
        t0 = self.at()
        await self.fake.go_down()
        print(f"[{t0:7.1f}] Gerrit down: REST 500, streams dropped, for {seconds:.0f}s",
              flush=True)
        await asyncio.sleep(seconds)
        await self.fake.come_back()
        self.faults.gerrit_outage = {"at": t0, "seconds": seconds,
                                     "refused": self.fake.outage_refusals}
        print(f"[{self.at():7.1f}] Gerrit back ({self.fake.outage_refusals} requests refused)",
              flush=True)

    async def te_host_down(self, seconds: float) -> None:
        role = self.roles.roles["te-host:tehost1"]
        self.held.add(role.name)
        t0 = self.at()
        role.kill()
        print(f"[{t0:7.1f}] TE host tehost1 down for {seconds:.0f}s", flush=True)
        await asyncio.sleep(seconds)
        role.start()
        self.held.discard(role.name)
        self.faults.te_host_down = {"at": t0, "seconds": seconds}

    async def lose_disk(self) -> None:
        role = self.roles.roles["executor"]
        self.held.add(role.name)
        role.kill()
        gone = []
        if self.log_store == "http":
            if self.executor_state.exists():
                gone.append(str(self.executor_state))
                shutil.rmtree(self.executor_state, ignore_errors=True)
        else:  # no shared store: the logs live on this disk; take only its work directories
            for child in self.executor_state.glob("*"):
                if child.is_dir() and child.name not in ("logs",):
                    gone.append(str(child))
                    shutil.rmtree(child, ignore_errors=True)
        await asyncio.sleep(1)
        role.start()
        self.held.discard(role.name)
        self.faults.disk_lost = {"at": self.at(), "deleted": gone, "log_store": self.log_store}
        print(f"[{self.at():7.1f}] executor's disk lost: {gone}", flush=True)

    async def inject(self, window: float) -> None:
        """Every fault, spread over `window` seconds (kills at random times)."""
        a = self.args
        rng = random.Random(a.seed)
        plan_: list[tuple[float, str]] = [(rng.uniform(10, window), "kill")
                                          for _ in range(a.kills)]
        plan_ += [(window * f, "server") for f in (0.2, 0.5, 0.8)]
        plan_ += [(window * 0.3, "gerrit"), (window * 0.6, "te"), (window * 0.7, "disk")]
        plan_ += [(window * f, "drop") for f in (0.1, 0.45, 0.9)]
        plan_.sort()
        background: list[asyncio.Task[None]] = []
        for when, what in plan_:
            await asyncio.sleep(max(0.0, self.started + when - time.time()))
            try:
                if what == "kill":
                    await self.kill_one(rng)
                elif what == "server":
                    await self.restart_server()
                elif what == "gerrit":
                    background.append(asyncio.create_task(self.gerrit_outage(a.outage)))
                elif what == "drop":
                    await self.fake.drop_streams()
                    self.faults.stream_drops.append(self.at())
                    print(f"[{self.at():7.1f}] stream-events dropped", flush=True)
                elif what == "te":
                    background.append(asyncio.create_task(self.te_host_down(a.te_down)))
                else:
                    await self.lose_disk()
            except Exception as exc:  # a fault that could not be injected is reported
                print(f"[{self.at():7.1f}] fault {what} failed: {exc!r}", flush=True)
                self.faults.unexpected_exits.append(f"fault {what} failed: {exc!r}")
        await asyncio.gather(*background)

    async def progress_lines(self) -> None:
        while True:
            await asyncio.sleep(30)
            f = self.fake
            print(f"[{self.at():7.1f}] progress: {len(f.ledger.events)} events, "
                  f"{len(f.reviews)} reports, merged {sorted(set(f.submits))}", flush=True)

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(2)
            for died in self.roles.restart_dead():
                if not any(died.startswith(h) for h in self.held):
                    self.faults.unexpected_exits.append(f"{self.at()}: {died}")
                    print(f"[{self.at():7.1f}] {died} exited by itself: restarted", flush=True)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def store_driver(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    try:
        import lockmaster.execution.log_shipping  # noqa: F401
        from lockmaster.logserver import LogServer

        LogServer.__init__.__code__.co_varnames.index("token_file")
        return "http"
    except (ImportError, ValueError):
        return "directory"


async def setup(args: argparse.Namespace) -> Harness:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="chaos-"))
    work.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    site = ReviewSite(work / "git")
    site.root.mkdir(parents=True, exist_ok=True)
    create_repos(site)
    fake = ChaosGerrit(site, submit_requires={"Code-Review": 2})
    await fake.start()
    conn = gerrit_connection(fake, work / "secrets", git_url=str(site.root))
    server = DevServer(work / "temporal.db", port=restartable_port(),
                       ui_port=restartable_port())
    await server.start(timeout=120)
    driver = store_driver(args.log_store)
    log_port = free_port()
    log_url = f"http://127.0.0.1:{log_port}"
    store: dict[str, Any] = {"driver": driver}
    if driver == "http":
        token = work / "secrets" / "log-token"
        token.write_text(secrets.token_hex(16) + "\n")
        store.update({"url": log_url, "token-file": str(token), "retry-interval": 5})
        from lockmaster.logserver import LogServer

        (work / "logstore").mkdir(exist_ok=True)
        LogServer(work / "logstore", "127.0.0.1", log_port,  # type: ignore[call-arg]
                  token_file=token).start()
    connection = conn.model_dump(by_alias=True, mode="json", exclude_none=True)
    common = dict(work=work, connection=connection, temporal=server.address, log_url=log_url,
                  log_store=store, holds=work / "te-holds.log")
    main = write_config(work / "lockmaster.yaml", config_data(state=work / "state", **common))
    executor_state = work / "executor-state"
    executor = write_config(work / "executor.yaml",
                            config_data(state=executor_state, **common))
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    roles = Roles()
    roles.add("orchestrator", ["worker", "orchestrator"], main, logs)
    roles.add("executor", ["worker", "executor"], executor, logs)
    roles.add("publisher", ["worker", "publisher"], main, logs)
    roles.add("te-host:tehost1", ["worker", "te-host:tehost1"], main, logs)
    roles.add("listener", ["gerrit", "listen", "--connection", "gerrit"], main, logs)
    roles.start_all()
    print(f"work directory {work}; log store: {driver}; Temporal {server.address}; "
          f"Gerrit {fake.url} (ssh {fake.ssh_port})", flush=True)
    return Harness(args, work, site, fake, server, roles, executor_state, driver)


async def broker_grants(h: Harness) -> list[tuple[str, int, str]]:
    """(TE, generation, holder key digest) of every te_authorize the broker scheduled, in
    history order, over all its runs."""
    import hashlib

    from temporalio.api.enums.v1 import EventType

    from lockmaster.temporal.client import connect

    config = load_config(h.work / "lockmaster.yaml")
    client = await connect(config)
    grants: list[tuple[str, int, str]] = []
    runs = [w async for w in client.list_workflows('WorkflowId = "te/default"')]
    for run in sorted(runs, key=lambda r: r.start_time):
        history = await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
        for event in history.events:
            if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                continue
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name != "te_authorize":
                continue
            data = json.loads(attrs.input.payloads[0].data)
            holder = hashlib.sha256(data["public_key"].encode()).hexdigest()[:12]
            te = f"{data['te']['host']}/{data['te']['name']}"
            grants.append((te, int(data["generation"]), holder))
    return grants


def load_config(path: Path) -> Any:
    from lockmaster.config.loader import load_config as load

    return load(path)


async def pool_nodes(h: Harness) -> dict[str, list[dict[str, Any]]]:
    from lockmaster.model.nodes import PoolStatus, PoolStatusQuery
    from lockmaster.temporal.client import connect

    client = await connect(load_config(h.work / "lockmaster.yaml"))
    status = await client.get_workflow_handle("nodepool/local/main").query(
        "status", PoolStatusQuery(), result_type=PoolStatus)
    nodes = [n.model_dump(mode="json") for n in status.nodes]
    requests = [{"id": f"request {r.id}", "state": f"request-{r.state}",
                 "request_id": r.id} for r in status.requests]
    return {"local/main": nodes + requests}


async def pool_settled(h: Harness, timeout: float) -> float:
    """Wait until the pool holds nothing (a build killed with its executor loses its nodes
    after nodes.lease-timeout); returns the seconds waited."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            pools = await pool_nodes(h)
            if checks.nothing_leaked(pools).ok:
                break
        except Exception:
            pass
        await asyncio.sleep(3)
    return time.time() - t0


async def published(h: Harness, changes: list[Planned]) -> set[tuple[int, int]]:
    """(change, patchset) of the package changes whose publication completed."""
    from lockmaster.temporal.client import connect

    client = await connect(load_config(h.work / "lockmaster.yaml"))
    done = set()
    for change in changes:
        if change.project != PKG:
            continue
        try:
            desc = await client.get_workflow_handle(f"publish/{PKG}/{change.number}").describe()
        except Exception:
            continue
        if desc.status is not None and desc.status.name == "COMPLETED":
            done.add((change.number, 1))
    return done


def mirror_versions(work: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for mirror in sorted((work / "mirrors").glob("*")):
        found[mirror.name] = {p.name.split("_")[1] for p in mirror.rglob("lockmaster-hello_*.deb")}
    return found


def answers(urls: list[str], within: float = 30.0) -> dict[str, int | str]:
    """Each URL's answer; one that cannot be reached (the server restarting after the last
    kill) is asked again for up to `within` seconds. An HTTP answer is final."""
    out: dict[str, int | str] = {}
    deadline = time.monotonic() + within
    for url in urls:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    out[url] = response.status
            except urllib.error.HTTPError as exc:
                out[url] = exc.code
            except OSError as exc:
                out[url] = repr(exc)
                if time.monotonic() < deadline:
                    time.sleep(1)
                    continue
            break
    return out


async def drain(h: Harness, changes: list[Planned], timeout: float) -> float:
    """Wait for the publications of the merged package changes; returns the seconds waited."""
    t0 = time.time()
    merged = [c for c in changes if c.project == PKG and c.number in h.fake.submits]
    while time.time() - t0 < timeout:
        try:
            if len(await published(h, merged)) == len(merged):
                break
        except Exception:
            pass
        await asyncio.sleep(3)
    return time.time() - t0


async def verify(h: Harness, changes: list[Planned]) -> list[checks.Check]:
    fake = h.fake
    good = [c.number for c in changes if c.good]
    broken = [c.number for c in changes if not c.good]
    expected_checks = {(c.number, 1): 1 + int(c.recheck) for c in changes}
    gated = {c.number: 1 for c in changes}
    results = [checks.merged_exactly_once(good, broken, list(fake.submits)),
               checks.one_report_per_outcome(fake.reviews, expected_checks, gated)]
    holds_file = h.work / "te-holds.log"
    holds = checks.parse_holds(holds_file.read_text().splitlines()
                               if holds_file.exists() else [])
    try:
        grants = await broker_grants(h)
    except Exception as exc:
        grants = []
        print(f"broker grants not read: {exc!r}", flush=True)
    results.append(checks.te_never_shared(holds, grants))
    try:
        results.append(checks.nothing_leaked(await pool_nodes(h)))
    except Exception as exc:
        results.append(checks.Check("no node or cloud server leaked", False,
                                    f"the pool's status could not be read: {exc!r}"))
    versions = {c.number: c.version or "" for c in changes
                if c.project == PKG and c.number in fake.submits}
    results.append(checks.packages_on_mirrors(versions, mirror_versions(h.work)))
    finals_check = {(c.number, 1): checks_count(fake, "check", c.number) for c in changes}
    acted: dict[str, set[tuple[int, int]]] = {
        "upload": {k for k, n in finals_check.items() if n >= 1},
        "recheck": {k for k, n in finals_check.items() if n >= 2},
        "approve": {(c.number, 1) for c in changes if checks_count(fake, "gate", c.number)},
        "merged": await published(h, changes),
    }
    events = [asdict(e) for e in fake.ledger.events
              if e.kind != "merged" or any(c.number == e.change and c.project == PKG
                                           for c in changes)]
    results.append(checks.no_event_lost(events, acted))
    urls = checks.log_urls(fake.reviews)
    disk = bool(h.faults.disk_lost) if h.log_store == "http" else None
    log_check = checks.log_urls_answer(await asyncio.to_thread(answers, urls), disk)
    if h.log_store != "http":
        log_check.detail += ("; logs surviving the executor's disk loss NOT CHECKABLE: the "
                             "logs are not in a shared store (logs.store driver directory), so "
                             "only its work directories were deleted")
    results.append(log_check)
    return results


def checks_count(fake: ChaosGerrit, pipeline: str, number: int) -> int:
    from bench.chaos_workload import finals

    return finals(fake, pipeline, number)


async def run(args: argparse.Namespace) -> int:
    h = await setup(args)
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # stop everything started, then exit
        loop.add_signal_handler(sig, main_task.cancel)
    changes = plan(args.groups, args.packages)
    background = [asyncio.create_task(h.watch()), asyncio.create_task(h.progress_lines())]
    try:
        await asyncio.sleep(5)  # the workers connect, pools and brokers start
        workload = asyncio.create_task(run_workload(h.site, h.fake, changes, args.spacing,
                                                    args.wait))
        faults = asyncio.create_task(h.inject(args.window))
        background += [workload, faults]
        await faults
        t_faults = h.at()
        progress = await workload
        t_workload = h.at()
        await asyncio.sleep(15)  # the roles restarted by the last faults come up
        drained = await drain(h, changes, args.wait)
        settled = await pool_settled(h, 180)
        background[0].cancel()
        results = await verify(h, changes)
    finally:
        for task in background:
            task.cancel()
        h.roles.stop_all()
        await h.server.stop()
        await h.fake.stop()
        await asyncio.to_thread(subprocess.run, ["gpgconf", "--homedir",
                                str(h.work / "publish-gnupg"), "--kill", "all"],
                                capture_output=True, check=False)
    summary = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(h.started)),
        "mode": "quick" if args.quick else "full",
        "seed": args.seed, "work": str(h.work), "log_store": h.log_store,
        "changes": {"total": len(changes), "good": sum(c.good for c in changes),
                    "broken": sum(not c.good for c in changes),
                    "stacked": sum(c.kind in ("child", "package") and c.needs is not None
                                   for c in changes),
                    "depends_on": sum(c.kind == "depends" for c in changes),
                    "packages": sum(c.project == PKG for c in changes),
                    "rechecks": sum(c.recheck for c in changes)},
        "merges": len(h.fake.submits),
        "reports": len(h.fake.reviews),
        "events": {"recorded": len(h.fake.ledger.events),
                   "never_on_stream": sum(not e.emitted for e in h.fake.ledger.events)},
        "kills": h.roles.kills - (1 if h.faults.te_host_down else 0)
                 - (1 if h.faults.disk_lost else 0),
        "kills_by_role": _by_role(h.faults.kills),
        "kills_with_children": sum(1 for k in h.faults.kills if k["with"]),
        "server_restarts": h.faults.server_restarts,
        "gerrit_outage": h.faults.gerrit_outage,
        "te_host_down": h.faults.te_host_down,
        "disk_lost": h.faults.disk_lost,
        "stream_drops": h.faults.stream_drops,
        "unexpected_exits": h.faults.unexpected_exits,
        "workload_timeouts": progress.timeouts,
        "durations": {"faults_done_at": t_faults, "workload_done_at": t_workload,
                      "drain_seconds": round(drained, 1),
                      "pool_settle_seconds": round(settled, 1), "total": h.at()},
        "invariants": [r.as_dict() for r in results],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    return 0 if all(r.ok for r in results if r.checkable) else 1


def _by_role(kills: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for kill in kills:
        out[kill["role"]] = out.get(kill["role"], 0) + 1
    return out


def print_summary(s: dict[str, Any]) -> None:
    c = s["changes"]
    print("\n== chaos summary ==")
    print(f"changes {c['total']} ({c['good']} good, {c['broken']} broken, {c['stacked']} "
          f"stacked, {c['depends_on']} Depends-On, {c['packages']} packages, "
          f"{c['rechecks']} rechecks); merges {s['merges']}; reports {s['reports']}")
    print(f"events recorded {s['events']['recorded']} "
          f"({s['events']['never_on_stream']} never on the stream)")
    print(f"SIGKILLs {s['kills']} {s['kills_by_role']} ({s['kills_with_children']} took "
          f"processes under the role with them); dev server restarts "
          f"{len(s['server_restarts'])}; Gerrit outage {s['gerrit_outage']}; TE host down "
          f"{s['te_host_down']}; disk lost {bool(s['disk_lost'])}")
    if s["unexpected_exits"]:
        print(f"unexpected exits: {s['unexpected_exits']}")
    if s["workload_timeouts"]:
        print(f"workload timeouts: {s['workload_timeouts']}")
    print(f"durations: {s['durations']}")
    for inv in s["invariants"]:
        mark = "PASS" if inv["ok"] else ("N/A " if not inv["checkable"] else "FAIL")
        print(f"  {mark} {inv['name']}: {inv['detail']}")
    print(f"written to {RESULTS}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="one group of app changes, two packages, 10 kills, short outages")
    p.add_argument("--groups", type=int, help="groups of five app changes (default 3)")
    p.add_argument("--packages", type=int, default=2, help="stacked package changes")
    p.add_argument("--kills", type=int, help="SIGKILLs of random roles (default 30)")
    p.add_argument("--outage", type=float, help="seconds Gerrit answers 500 (default 120)")
    p.add_argument("--te-down", type=float, help="seconds the TE host is down (default 60)")
    p.add_argument("--window", type=float, help="seconds over which faults are spread")
    p.add_argument("--spacing", type=float,
                   help="seconds between changes (default: spread over 70%% of the window)")
    p.add_argument("--wait", type=float, default=300.0, help="bound on each wait for a report")
    p.add_argument("--log-store", choices=("auto", "http", "directory"), default="auto")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--workdir", help="where to keep everything (default: a new temp dir)")
    args = p.parse_args(argv)
    quick = args.quick
    for name, full, short in (("groups", 3, 1), ("kills", 30, 10), ("outage", 120.0, 30.0),
                              ("te_down", 60.0, 20.0), ("window", 600.0, 240.0)):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    if args.spacing is None:
        args.spacing = args.window * 0.7 / (args.groups * 5 + args.packages)
    return args


def main() -> None:
    raise SystemExit(asyncio.run(run(parse_args())))


if __name__ == "__main__":
    main()
