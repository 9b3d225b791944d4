"""Benchmark: package builds and install tests in clean roots (issue 13).

Everything is real: pkgtool.py with mmdebstrap, apt, dpkg-buildpackage, debhelper, gcc, reprepro
and apt-cacher-ng. The distribution is the tests' local repository of real Debian bookworm
packages (tests/distribution.py; `scripts/setup --test` downloads them), served over HTTP on
loopback, so "upstream" costs no internet time: a real mirror adds its download time to the cold
cache rows only.

Measured, for the demo package (lockmaster/demo/packages/hello) and GNU hello 2.10-3 (Debian's
real source package, fully unpacked):
- build on the node directly (the node's own tools, `dpkg-buildpackage` as before issue 13);
- build in a clean root, cold cache (a new, empty apt-cacher-ng in front of the distribution);
- build in a clean root, warm cache (the same again);
- install test per package: in a clean minbase root of the distribution (warm cache), and for
  the demo also in the host-made root (no distribution);
- once: preparing the roots (mmdebstrap buildd and minbase, cold), which a build pays only when
  its node has no prepared root younger than max-age.

Run: .venv/bin/python -m bench.package_build [--rounds 3]
Results: printed, and written to bench/results/package_build.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lockmaster.packaging.cache_server import PackageCache
from tests import distribution
from tests.test_package_cache import low_port

ROOT = Path(__file__).resolve().parent.parent
PKGTOOL = ROOT / "lockmaster" / "packaging" / "pkgtool.py"
DEMO = ROOT / "lockmaster" / "demo" / "packages" / "hello"
RESULTS = ROOT / "bench" / "results" / "package_build.json"


def pkgtool(*args: object) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(PKGTOOL), *map(str, args)],
                          capture_output=True, text=True)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"pkgtool {' '.join(map(str, args[:3]))} failed:\n{proc.stdout[-3000:]}\n"
                 f"{proc.stderr[-2000:]}")
    return took


def measure(work: Path, rounds: int) -> dict[str, object]:
    url, _ = distribution.local_distribution()
    port = int(url.rsplit(":", 1)[1])
    sources = {"demo (lockmaster-hello)": DEMO,
               "GNU hello 2.10-3": distribution.hello_source(work / "hello")}
    results: dict[str, object] = {}
    roots = work / "roots"
    # As lockmaster's jobs run it: debhelper preinstalled in the build root
    # (packaging.roots.build-include).
    include = ["--build-include", "debhelper"]
    direct = ["--distribution", url, "--codename", distribution.CODENAME, "--roots", roots,
              *include]
    results["prepare roots (mmdebstrap buildd + minbase, once per node and max-age)"] = \
        round(pkgtool("prepare-root", *direct), 2)
    n = 0
    for name, src in sources.items():
        rows: dict[str, list[float]] = {}
        for _ in range(rounds):
            with PackageCache(work / f"cache{n}", "127.0.0.1", low_port(), [port]) as cache:
                dist = ["--distribution", f"{cache.url}/127.0.0.1:{port}", "--codename",
                        distribution.CODENAME, "--roots", roots, *include]
                n += 1
                # The node's own tools: needs the package's build dependencies installed on
                # the node (for GNU hello: help2man, texinfo), which clean roots never do.
                rows.setdefault("build on the node directly", []).append(
                    pkgtool("build", src, work / f"o{n}", "--format", "deb"))
                for label in ("build in a clean root, cold cache",
                              "build in a clean root, warm cache"):
                    n += 1
                    rows.setdefault(label, []).append(
                        pkgtool("build", src, work / f"o{n}", "--format", "deb", *dist))
                repo = work / f"r{n}"
                pkgtool("test-repo", work / f"o{n}", repo, "--codename", distribution.CODENAME)
                count = len(list((work / f"o{n}" / "deb").glob("*.deb")))
                took = pkgtool("install-test", repo, "--format", "deb", *dist)
                rows.setdefault("install test per package, clean root", []).append(took / count)
                if src == DEMO:
                    took = pkgtool("install-test", repo, "--format", "deb")
                    rows.setdefault("install test per package, host-made root", []).append(
                        took / count)
        results[name] = {label: {"median": round(statistics.median(v), 2),
                                 "min": round(min(v), 2), "max": round(max(v), 2)}
                         for label, v in rows.items()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("clean roots need root: run as root")
    if not distribution.available():
        sys.exit(distribution.missing_reason())
    work = Path(tempfile.mkdtemp(prefix="bench-package-build-"))
    try:
        load = os.getloadavg()
        results = measure(work, args.rounds)
        results["machine"] = {"load_before": [round(x, 2) for x in load],
                              "cores": os.cpu_count(), "rounds": args.rounds}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
