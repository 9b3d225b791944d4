"""`lockmaster packaging ...`: the package cache (apt-cacher-ng) in front of the distribution's
mirror: what it holds and serves (`cache`), and running it on its own (`serve-cache`, the
docker-compose service)."""

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

app = typer.Typer(help="Packaging CI: the package cache.", no_args_is_help=True)
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
