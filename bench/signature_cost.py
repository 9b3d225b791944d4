"""Benchmark: the cost of one build's known-failure signature matching (issue 16).

What the executor does after every build (lockmaster/signatures/library.py `match`): look
whether the signatures directory changed (a stat per file), then, for every signature in scope,
read its files (each once per build, bounded to `max-bytes-per-file`: the first and last halves
of a larger file) and search its precompiled regex. Measured on real files in a temporary build
log directory, as the executor has it, for:

- signatures: the repository's own (signatures/, ported from elastic-recheck), then 50 and 200
  (those plus synthetic ones shaped like elastic-recheck's: literal text with `.*` or `\\S+`
  between, a quarter of them naming a glob of service logs);
- job-output.txt sizes: 100 KiB, 1 MiB, 4 MiB (the default cap) and 64 MiB (cut to the cap);
  plus 20 service logs of 200 KiB under logs/ for the glob signatures;
- a failed build whose log matches none (the worst case: every regex scans everything) and one
  matching the first signature.

Run: .venv/bin/python -m bench.signature_cost (about a minute; `--runs 5` for a quick look).
Prints a table; writes bench/results/signature_cost.json (`--json` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from lockmaster.config.signatures import DEFAULT_MAX_BYTES
from lockmaster.model.build import Result
from lockmaster.signatures.format import load_directory
from lockmaster.signatures.library import SignatureLibrary

REPO = Path(__file__).resolve().parent.parent
WORDS = ("nova", "neutron", "cinder", "glance", "keystone", "tempest", "volume", "server",
         "port", "network", "image", "snapshot", "attach", "detach", "timeout", "request",
         "compute", "scheduler", "conductor", "rabbit", "mysql", "libvirt", "qemu", "ssh")
MB = 2**20


def log_line(rng: random.Random, number: int) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16)))
    stamp = f"2026-12-07 10:{number // 6000 % 60:02d}:{number // 100 % 60:02d}.{number % 1000:03d}"
    level = rng.choice(("INFO", "DEBUG", "WARNING"))
    return f"{stamp}000 | {level} {words} id={rng.getrandbits(32):08x}\n"


def write_log(path: Path, size: int, seed: int, tail: str = "") -> None:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = "".join(log_line(rng, n) for n in range(4000))  # ~0.4 MiB, repeated
    with path.open("w") as out:
        written = 0
        while written < size:
            piece = chunk[: size - written]
            out.write(piece)
            written += len(piece)
        out.write(tail)


def synthetic(directory: Path, count: int) -> None:
    """Signatures shaped like elastic-recheck's queries, none matching the generated logs."""
    rng = random.Random(16)
    for index in range(count):
        a, b = rng.sample(WORDS, 2)
        shape = index % 4
        if shape == 0:
            regex = f"Details: {a} {b} timed out after \\\\d+ seconds waiting for {index}"
        elif shape == 1:
            regex = f"{a.capitalize()}Error: .* {b} .* not found \\\\(bug {index}\\\\)"
        elif shape == 2:
            regex = f"Traceback .*{a}_{b}_{index}"
        else:
            regex = f"ERROR {a}\\\\.{b} \\\\S+ failed: code {index}"
        files = "\nfiles: ['**/screen-*.txt']" if index % 4 == 3 else ""
        (directory / f"synthetic-{index:03d}.yaml").write_text(
            f'version: 1\nbug: https://bugs.example.test/{index}\nregex: "{regex}"{files}\n')


def median_p95(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1,
                                                   round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", type=Path, default=REPO / "bench/results/signature_cost.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="signature-cost-"))
    rows: list[dict[str, Any]] = []
    try:
        for n_logs in range(20):
            write_log(work / "build" / "logs" / f"screen-{n_logs:02d}.txt", 200 * 1024,
                      seed=100 + n_logs)
        sizes = {"100 KiB": 100 * 1024, "1 MiB": MB, "4 MiB": 4 * MB, "64 MiB": 64 * MB}
        real = sorted(p.name for p in (REPO / "signatures").glob("*.yaml"))
        for total in (len(real), 50, 200):
            sigdir = work / f"signatures-{total}"
            sigdir.mkdir()
            for name in real:
                shutil.copy(REPO / "signatures" / name, sigdir / name)
            synthetic(sigdir, total - len(real))
            started = time.perf_counter()
            signatures, errors = load_directory(sigdir)
            load_s = time.perf_counter() - started
            assert not errors and len(signatures) == total, errors
            library = SignatureLibrary(sigdir, max_bytes=DEFAULT_MAX_BYTES)
            library.current()
            for label, size in sizes.items():
                for matching in (False, True):
                    tail = ("2026-12-07 11:00:00.000000 | tempest.lib.exceptions.SSHTimeout: "
                            "Connection to the 10.1.0.4 via SSH timed out.\n") if matching else ""
                    write_log(work / "build" / "job-output.txt", size, seed=7, tail=tail)
                    walls, cpus, found = [], [], []
                    for _ in range(args.runs):
                        wall, cpu = time.perf_counter(), time.process_time()
                        found = library.match(work / "build", "openstack/nova", "tempest-full",
                                              Result.FAILURE)
                        walls.append(time.perf_counter() - wall)
                        cpus.append(time.process_time() - cpu)
                    assert bool(found) == matching, found
                    p50, p95 = median_p95(walls)
                    row = {"signatures": total, "log": label, "matching": matching,
                           "wall_p50_ms": round(p50 * 1000, 2),
                           "wall_p95_ms": round(p95 * 1000, 2),
                           "cpu_p50_ms": round(statistics.median(cpus) * 1000, 2),
                           "load_ms": round(load_s * 1000, 1), "matched": len(found)}
                    rows.append(row)
                    print(f"{total:>4} signatures  {label:>8} log  "
                          f"{'match' if matching else 'none ':>5}  p50 {row['wall_p50_ms']:8.2f} ms"
                          f"  p95 {row['wall_p95_ms']:8.2f} ms  cpu {row['cpu_p50_ms']:8.2f} ms"
                          f"  (directory load {row['load_ms']} ms)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"runs": args.runs, "cpus": os.cpu_count(),
                                     "load": os.getloadavg(), "rows": rows}, indent=1) + "\n")
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
