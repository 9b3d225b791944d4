"""Benchmark: the TE broker's grant latency and how fast an expired TE is leased again (issue 5).

Everything is real: the Temporal dev server, the orchestrator worker running the broker
(`te/default`), the TE host's worker (libvirt's test:///default driver, authorized_keys per lease
generation) and `TEHolder`, the client every job and `lockmaster te lease` use (own ed25519 key
pair, `request_lease` signal, then `lease_status` polls).

Measures, on one TE host with `--tes` TEs:
- grant: a holder asks while a TE is free (`--grants` times, one at a time; each lease is
  released and the TE reset before the next ask): `TEHolder.acquire` end to end, and the part the
  broker reports as waited (from the request arriving to the grant, in workflow time: the
  authorize activity on the host worker that installs the holder's key);
- expiry: a holder takes the only free TE with a `--ttl` lease and goes silent (its renewer is
  stopped, as when its process is killed) while a second holder waits; the time from the lease's
  expiry to the waiting holder having the TE (expiry timer, reset on the host, authorize,
  the waiter's next poll), `--expiries` times;
- release: the same, but the first holder releases; time from `release` to the waiter's grant.

Run: .venv/bin/python -m bench.te_latency (about a minute).
Results: printed, and written to bench/results/te_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from lockmaster.config.models import LockmasterConfig
from lockmaster.model.testenv import TEState
from lockmaster.review.registry import review_drivers
from lockmaster.starters.testenv import TEBrokers, TEHolder, ensure_brokers
from lockmaster.temporal import search_attributes
from lockmaster.temporal.devserver import temporal_binary
from lockmaster.workers.orchestrator import orchestrator_worker
from lockmaster.workers.te_host import te_host_worker
from tests.deployment import make_config

RESULTS = Path(__file__).parent / "results" / "te_latency.json"


def te_config(state: Path, tes: int) -> LockmasterConfig:
    config = make_config(state, projects=[], jobs=[], prefix=f"b-{uuid.uuid4().hex[:8]}")
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    data["testenvs"] = {"lease-ttl": 30, "hosts": [{
        "name": "tehost0", "address": "127.0.0.1", "host-key": "ssh-ed25519 AAAAC3Nza",
        "te-count": tes, "nodes-per-te": 2}]}
    return LockmasterConfig.model_validate(data)


async def all_available(ops: TEBrokers) -> bool:
    [status] = await ops.status()
    return all(te.state is TEState.AVAILABLE for te in status.tes)


async def until(check, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    # Not faster: a workflow queried every few ms gets its own tasks ~40 ms later (measured on
    # the dev server), which would inflate the very latency measured here.
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.2)


async def one_available(ops: TEBrokers) -> bool:
    [status] = await ops.status()
    return [te.state for te in status.tes].count(TEState.AVAILABLE) == 1


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "min": ordered[0],
        "max": ordered[-1],
    }


async def grants(client: Client, config: LockmasterConfig, ops: TEBrokers, count: int
                 ) -> dict[str, object]:
    total, waited = [], []
    for i in range(count):
        await until(lambda: all_available(ops))
        holder = TEHolder(client, config, "default", f"grant-{i}", "bench")
        started = time.perf_counter()
        status = await holder.acquire(timeout=30)
        total.append(time.perf_counter() - started)
        waited.append(status.waited or 0.0)
        await holder.release()
    return {"acquire": summary(total), "broker_waited": summary(waited)}


async def handovers(client: Client, config: LockmasterConfig, ops: TEBrokers, count: int,
                    ttl: float, *, expire: bool) -> dict[str, object]:
    times, broker_side = [], []
    kind = "expiry" if expire else "release"
    for i in range(count):
        await until(lambda: one_available(ops))
        first = TEHolder(client, config, "default", f"{kind}-{i}-a", "bench", ttl=ttl)
        status = await first.acquire(timeout=30)
        second = TEHolder(client, config, "default", f"{kind}-{i}-b", "bench")
        asked = time.time()
        waiting = asyncio.create_task(second.acquire(timeout=60))
        await asyncio.sleep(0.3)  # the second holder is queued
        assert not waiting.done(), "the second holder got a TE without waiting"
        if expire:
            assert first._renewer is not None and status.expires is not None
            first._renewer.cancel()  # silent from now on
            ended_at = status.expires  # epoch seconds (the broker's clock is the server's)
        else:
            ended_at = time.time()
            await first.release()
        granted = await waiting
        times.append(time.time() - ended_at)
        # The broker's part: until it granted (the rest is the waiter's next poll).
        broker_side.append(asked + (granted.waited or 0.0) - ended_at)
        assert granted.te is not None and status.te is not None
        assert granted.te.key == status.te.key
        await second.release()
        with contextlib.suppress(Exception):
            await first.release()  # after an expiry: tells the holder it ended, harmless
    return {"handover": summary(times), "broker_granted": summary(broker_side)}


async def main(args: argparse.Namespace) -> dict[str, object]:
    state = Path(tempfile.mkdtemp(prefix="bench-te-"))
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL, dev_server_log_level="error")
    results: dict[str, object] = {}
    try:
        client = env.client
        config = te_config(state, args.tes)
        async with orchestrator_worker(client, config, review_drivers(config)), \
                te_host_worker(client, config, "tehost0"):
            await ensure_brokers(client, config)
            ops = TEBrokers(client, config)
            await until(lambda: all_available(ops))
            # Grants: every TE free.
            results["grant"] = await grants(client, config, ops, args.grants)
            # Handovers: all TEs but one held by blockers, so two holders compete for one TE.
            blockers = [TEHolder(client, config, "default", f"blocker-{i}", "bench")
                        for i in range(args.tes - 1)]
            for blocker in blockers:
                await blocker.acquire(timeout=30)
            results["expiry"] = await handovers(client, config, ops, args.expiries, args.ttl,
                                                expire=True)
            results["release"] = await handovers(client, config, ops, args.expiries, args.ttl,
                                                 expire=False)
            for blocker in blockers:
                await blocker.release()
    finally:
        await env.shutdown()
    results["settings"] = {"tes": args.tes, "grants": args.grants, "expiries": args.expiries,
                           "ttl": args.ttl}
    return results


def show(results: dict[str, object]) -> None:
    def line(name: str, s: dict[str, float]) -> None:
        print(f"  {name:<28} p50 {s['p50']:.3f} s  p90 {s['p90']:.3f} s  "
              f"min {s['min']:.3f}  max {s['max']:.3f}  (n={int(s['n'])})")

    grant = results["grant"]
    assert isinstance(grant, dict)
    print("grant when a TE is free:")
    line("TEHolder.acquire", grant["acquire"])
    line("broker: ask -> granted", grant["broker_waited"])
    for kind in ("expiry", "release"):
        part = results[kind]
        assert isinstance(part, dict)
        print(f"{kind} -> leased again by the waiting holder:")
        line("until the waiter has it", part["handover"])
        line("until the broker granted it", part["broker_granted"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tes", type=int, default=4)
    parser.add_argument("--grants", type=int, default=40)
    parser.add_argument("--expiries", type=int, default=10)
    parser.add_argument("--ttl", type=float, default=1.5)
    args = parser.parse_args()
    results = asyncio.run(main(args))
    show(results)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
