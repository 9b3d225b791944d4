"""`lockmaster packaging ...`: the package cache (apt-cacher-ng) in front of the distribution's
mirror: what it holds and serves (`cache`), and running it on its own (`serve-cache`, the
docker-compose service); the distribution's prepared roots on this machine (`roots`)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from lockmaster.cli.context import fail, load, out
from lockmaster.packaging.cache_server import (
    CacheError,
    cache_root,
    directory_size,
    is_apt_cacher_ng,
    package_cache,
    read_stats,
)

app = typer.Typer(help="Packaging CI: the package cache and the prepared roots.",
                  no_args_is_help=True)
ConfigOpt = typer.Option(None, "--config", "-c", help="lockmaster.yaml")


def _size(n: int) -> str:
    value, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


@app.command("cache")
def cache(as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
          config: Path | None = ConfigOpt) -> None:
    """The package cache: URL, directory, size, hits and misses.

    Hits were served from the cache, misses fetched from the mirror (apt-cacher-ng's log)."""
    cfg = load(config)
    settings = cfg.packaging.cache
    mirror = cfg.packaging.distribution.mirror if cfg.packaging.distribution else None
    if not settings.enabled:
        if as_json:
            out.print_json(json.dumps({"enabled": False, "mirror": mirror}))
        else:
            out.print("the package cache is off (packaging.cache.enabled: false); roots fetch "
                      f"from {mirror or 'no mirror (packaging.distribution is not set)'}")
        return
    root = cache_root(cfg)
    if root.exists() and not root.is_dir():
        fail(f"packaging.cache.dir {root} is not a directory; point packaging.cache.dir at a "
             "directory (default: <state-dir>/package-cache)")
    url = settings.base_url()
    answering = is_apt_cacher_ng(url)
    server = package_cache(cfg)
    stats = read_stats(server.log_dir) if server.log_dir.is_dir() else None
    report: dict[str, Any] = {
        "enabled": True, "url": url, "answering": answering, "serve": settings.serve,
        "dir": str(root), "size_bytes": directory_size(server.cache_dir),
        "mirror": mirror, "roots_mirror": cfg.packaging.mirror_for_roots(),
        "stats": stats.to_json() if stats else None,
    }
    if as_json:
        out.print_json(json.dumps(report))
        return
    who = "started by `lockmaster run`" if settings.serve else \
        "runs elsewhere (packaging.cache.serve: false)"
    state = "answering" if answering else "NOT answering"
    out.print(f"package cache: {url} ({state}; {who})")
    out.print(f"  dir: {root} ({_size(report['size_bytes'])} cached)")
    if report["roots_mirror"]:
        out.print(f"  roots fetch {mirror} as {report['roots_mirror']}")
    if stats is None:
        out.print("  statistics: no log here yet (the cache has not run with this directory"
                  + ("" if settings.serve else "; run this where the cache runs") + ")")
        return
    out.print(f"  {stats.requests} requests answered: {stats.hits} from the cache "
              f"({_size(stats.hit_bytes)}), {stats.misses} fetched from upstream; "
              f"{stats.errors} error answers")
    out.print(f"  from upstream: {sum(stats.fetched.values())} files, "
              f"{_size(stats.fetched_bytes)}, of which {len(stats.packages_fetched)} "
              "package files (indices are revalidated on every update)")


@app.command("serve-cache")
def serve_cache(config: Path | None = ConfigOpt) -> None:
    """Run the package cache (apt-cacher-ng) in the foreground until stopped.

    SIGTERM or Ctrl-C stops it: docker-compose's package-cache service, or a cache host."""
    cfg = load(config)
    if not cfg.packaging.cache.enabled:
        fail("packaging.cache.enabled is false: there is no package cache to serve")
    server = package_cache(cfg)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        server.start()
    except CacheError as exc:
        fail(str(exc), 1)
    except OSError as exc:
        fail(f"{server.root}: {exc} (check packaging.cache.dir and its permissions)", 1)
    out.print(f"package cache (apt-cacher-ng) listening on {cfg.packaging.cache.listen}:"
              f"{server.port}, cache in {server.root}; clients use "
              f"{cfg.packaging.cache.base_url()}")
    try:
        while not stop.wait(1.0):
            process = server.process
            if process is None or process.poll() is not None:
                code = process.returncode if process else None
                fail(f"apt-cacher-ng exited ({code}); see {server.output_file}", 1)
    finally:
        server.stop()
    out.print("stopped")


def _roots_dir(cfg: Any) -> Path:
    """Where this machine's prepared roots are (what pkgtool uses on a local node)."""
    if cfg.packaging.roots.dir is not None:
        return cfg.resolve(cfg.packaging.roots.dir)
    return Path("/var/cache/lockmaster/roots")


@app.command("roots")
def roots(prepare: bool = typer.Option(False, "--prepare", help="prepare (or refresh) them now, "
                                       "as the executor's roots keeper does"),
          as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
          config: Path | None = ConfigOpt) -> None:
    """The distribution's prepared roots on this machine: age, packages, what they were made
    from (docs/packaging.md, "Clean roots")."""
    import subprocess
    import time

    from lockmaster.packaging.roots_keeper import prepare_command

    cfg = load(config)
    if cfg.packaging.target() is None:
        fail("no clean roots: packaging.distribution is null or packaging.clean-roots is false "
             "(builds use the node's own tools)")
    if prepare:
        proc = subprocess.run(prepare_command(cfg), capture_output=True, text=True)
        if proc.returncode != 0:
            fail("preparing the roots failed:\n" + (proc.stderr or proc.stdout).strip()[-2000:])
    home = _roots_dir(cfg)
    found = []
    for meta_file in sorted(home.glob("*/meta.json")):
        meta = json.loads(meta_file.read_text())
        lock = meta_file.with_name("packages.lock")
        packages = len(lock.read_text().splitlines()) if lock.is_file() else 0
        found.append({"root": meta_file.parent.name, "path": str(meta_file.parent / "root"),
                      "variant": meta.get("variant"), "include": meta.get("include", []),
                      "suites": meta.get("suites", []), "packages": packages,
                      "age_seconds": round(time.time() - float(meta["prepared_at"])),
                      "max_age_seconds": cfg.packaging.roots.max_age})
    if as_json:
        out.print_json(json.dumps({"dir": str(home), "roots": found}))
        return
    if not found:
        fail(f"no prepared roots in {home} yet: `lockmaster packaging roots --prepare` makes "
             "them (the executor of local nodes does at start)", code=1)
    out.print(f"prepared roots in {home} (remade after {cfg.packaging.roots.max_age:g} s):")
    for r in found:
        extra = f" + {', '.join(r['include'])}" if r["include"] else ""
        out.print(f"  {r['root']}: {r['variant']}{extra}, {r['packages']} packages, "
                  f"{r['age_seconds'] / 60:.0f} min old ({' '.join(r['suites'])})")
