"""Benchmark: the cost of publishing one package into a stable repository of 500 (issue 5).

Everything is real: reprepro, createrepo_c, gpg (a throwaway RSA 2048 key), rpmsign, gpgv,
rpmkeys, apt-get, rsync, git. Per format (DEB, RPM):

- seed: `--packages` tiny packages (made with dpkg-deb / one rpmbuild spec of subpackages)
  published as one snapshot, then synced to an empty directory mirror (the first, full sync);
- add: `--runs` times, one new package published into that repository (a new snapshot beside
  the live one: inputs checked and copied, tree cloned with hardlinks, reprepro includedeb +
  export or rpmsign + createrepo_c --update, signing, verification as a client would, switch),
  then synced to the directory mirror (package files with --link-dest, metadata by checksum,
  dry-run check, pointer switch). Medians over the runs, per step.

Every snapshot is kept (grace period one day), so each run adds to a repository of
`--packages` + (runs so far) packages.

Run: .venv/bin/python -m bench.publish_cost (about 1-2 minutes; `--runs 3 --packages 100`
for a quick look). Results: printed as docs/publishing.md shows them; `--json FILE` also
writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from lockmaster.publishing import (
    AptRepoConfig,
    DirectoryMirror,
    PublishRequest,
    RpmRepoConfig,
    SigningKey,
    publish,
    sync_mirror,
)
from tests.publishing_helpers import (
    build_deb,
    build_dir,
    build_rpms,
    make_git_repo,
    make_signing_key,
    stop_gpg_agent,
)

PUBLISH_STEPS = ["inputs", "clone", "build", "sign", "verify", "stored", "switch", "prune"]
SYNC_STEPS = ["state", "files", "metadata", "check", "stored", "switch", "prune"]
STEP_DONE = re.compile(r": (\w+) done \(([\d.]+) s\)$")


class Steps:
    """A progress callback keeping each step's duration ("<subject>: <step> done (<t> s)")."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, message: str) -> None:
        found = STEP_DONE.search(message)
        if found:
            self.seconds[found.group(1)] = float(found.group(2))


def _packages(fmt: str, out: Path, names: list[str]) -> list[Path]:
    if fmt == "deb":
        return [build_deb(out, name, "1.0") for name in names]
    return build_rpms(out, [(name, "1.0", "1") for name in names])


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _one_format(fmt: str, base: Path, key: SigningKey, count: int, runs: int
                ) -> dict[str, Any]:
    git = make_git_repo(base / "git")
    repo = (AptRepoConfig(root=base / "repo", codename="bookworm") if fmt == "deb"
            else RpmRepoConfig(root=base / "repo"))
    mirror = DirectoryMirror(name="bench", path=base / "mirror")
    made = time.monotonic()
    seed = _packages(fmt, base / "packages", [f"bench-{i:04d}" for i in range(count)])
    extra = _packages(fmt, base / "extra", [f"added-{i:02d}" for i in range(runs)])
    result: dict[str, Any] = {"packages": count, "build_test_packages_s":
                              round(time.monotonic() - made, 1)}

    manifest = build_dir(base / "builds", "seed", seed, git.merged)
    started = time.monotonic()
    info = publish(repo, key, PublishRequest(snapshot_id="seed", manifest=manifest,
                                             git_repo=git.path, branch="main"))
    result["seed_publish_s"] = round(time.monotonic() - started, 3)
    result["seed_publish_steps"] = info.timings
    started = time.monotonic()
    report = sync_mirror(repo.root, "seed", mirror)
    result["seed_sync_s"] = round(time.monotonic() - started, 3)
    result["seed_sync_bytes"] = report.bytes_sent

    adds: list[dict[str, Any]] = []
    for run, package in enumerate(extra, 1):
        manifest = build_dir(base / "builds", f"add-{run}", [package], git.merged)
        publish_steps, sync_steps = Steps(), Steps()
        started = time.monotonic()
        info = publish(repo, key, PublishRequest(snapshot_id=f"add-{run}", manifest=manifest,
                                                 git_repo=git.path, branch="main"),
                       progress=publish_steps)
        published = time.monotonic() - started
        started = time.monotonic()
        report = sync_mirror(repo.root, f"add-{run}", mirror, progress=sync_steps)
        synced = time.monotonic() - started
        assert info.added and report.added == info.added, (info, report)
        adds.append({"publish_s": round(published, 3), "publish_steps": publish_steps.seconds,
                     "sync_s": round(synced, 3), "sync_steps": sync_steps.seconds,
                     "sync_bytes": report.bytes_sent, "sync_files": report.files_transferred,
                     "package_count": info.package_count})
    result["runs"] = adds
    result["median"] = {
        "publish_s": _median([a["publish_s"] for a in adds]),
        "publish_steps": {s: _median([a["publish_steps"].get(s, 0.0) for a in adds])
                          for s in PUBLISH_STEPS},
        "sync_s": _median([a["sync_s"] for a in adds]),
        "sync_steps": {s: _median([a["sync_steps"].get(s, 0.0) for a in adds])
                       for s in SYNC_STEPS},
        "sync_bytes": int(statistics.median([a["sync_bytes"] for a in adds])),
        "sync_files": int(statistics.median([a["sync_files"] for a in adds])),
    }
    result["range"] = {
        "publish_s": [min(a["publish_s"] for a in adds), max(a["publish_s"] for a in adds)],
        "sync_s": [min(a["sync_s"] for a in adds), max(a["sync_s"] for a in adds)],
    }
    return result


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cores": os.cpu_count(), "load_1m": round(load[0], 2),
            "tmp_fs": _filesystem(Path(tempfile.gettempdir()))}


def _filesystem(path: Path) -> str:
    best, found = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
            best, found = parts[1], parts[2]
    return found


def main(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="lm-publish-bench-"))
    results: dict[str, Any] = {"machine_before": machine(), "runs": args.runs}
    key = make_signing_key(tmp / "key")
    try:
        for fmt in args.formats:
            results[fmt] = _one_format(fmt, tmp / fmt, key, args.packages, args.runs)
    finally:
        stop_gpg_agent(key)
        shutil.rmtree(tmp, ignore_errors=True)
    results["machine_after"] = machine()
    results["bench_s"] = round(time.monotonic() - began, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


def table(results: dict[str, Any]) -> str:
    rows = ["| one package added to a repository of N | DEB | RPM |", "| --- | --- | --- |"]

    def cell(fmt: str, pick: Any) -> str:
        return pick(results[fmt]) if fmt in results else "-"

    def both(label: str, pick: Any) -> None:
        rows.append(f"| {label} | {cell('deb', pick)} | {cell('rpm', pick)} |")

    both("N (packages before the add)", lambda r: str(r["packages"]))
    both("**publish** (median; min-max)", lambda r: (
        f"**{r['median']['publish_s']:.2f} s** ({r['range']['publish_s'][0]:.2f}"
        f"-{r['range']['publish_s'][1]:.2f})"))
    for step in PUBLISH_STEPS:
        both(f"- {step}", lambda r, s=step: f"{r['median']['publish_steps'][s]:.3f} s")
    both("**sync to a directory mirror** (median; min-max)", lambda r: (
        f"**{r['median']['sync_s']:.2f} s** ({r['range']['sync_s'][0]:.2f}"
        f"-{r['range']['sync_s'][1]:.2f})"))
    for step in SYNC_STEPS:
        both(f"- {step}", lambda r, s=step: f"{r['median']['sync_steps'][s]:.3f} s")
    both("- bytes sent / files transferred", lambda r: (
        f"{r['median']['sync_bytes']:,} / {r['median']['sync_files']}"))
    both("seed: publish all N at once", lambda r: f"{r['seed_publish_s']:.1f} s")
    both("seed: first sync of all N", lambda r: (
        f"{r['seed_sync_s']:.2f} s, {r['seed_sync_bytes']:,} bytes"))
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--formats", nargs="*", default=["deb", "rpm"], choices=["deb", "rpm"])
    parser.add_argument("--json", help="also write the results to this file")
    found = main(parser.parse_args())
    print(table(found))
    print(f"machine before: {found['machine_before']}, after: {found['machine_after']}; "
          f"bench took {found['bench_s']} s")
