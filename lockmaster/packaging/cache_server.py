"""The package cache: Debian's apt-cacher-ng, run by lockmaster with a configuration of its own,
and its hit/miss statistics read from apt-cacher-ng's own transfer log (docs/packaging.md,
"The package cache").

Nothing here reads or changes /etc/apt-cacher-ng or the system's apt-cacher-ng service: the
configuration directory, cache, logs and pid file all live under the cache's directory
(`packaging.cache.dir`, default <state-dir>/package-cache).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from lockmaster.config.models import LockmasterConfig

DEBIAN_PACKAGE = "apt-cacher-ng"
EXECUTABLE = "apt-cacher-ng"
# Debian installs it in /usr/sbin, which is not on an ordinary user's PATH.
SBIN = Path("/usr/sbin/apt-cacher-ng")
SUPPORT_DIR = Path("/usr/lib/apt-cacher-ng")  # its HTML pages (usage, report) and mirror lists
# apt-cacher-ng 3.7.4 formats ports as signed 16-bit numbers: listening on 38142 it asks
# getaddrinfo for service "-2739" and exits ("Error resolving address for binding"), and it
# cannot reach an upstream on a port above either (503 Connection refused). Seen here.
MAX_PORT = 32767
LOG_FILE = "apt-cacher.log"
# The files a "build downloaded nothing" claim is about; index files (Release, Packages) are
# revalidated with the mirror on every `apt-get update`, which is what keeps the cache correct.
PACKAGE_SUFFIXES = (".deb", ".udeb", ".ddeb", ".dsc", ".tar.gz", ".tar.xz", ".tar.bz2", ".rpm")


class CacheError(RuntimeError):
    """The package cache cannot start or be read; the message says what, why and how to fix."""


# --- statistics --------------------------------------------------------------------------------


@dataclass
class CacheStats:
    """What apt-cacher-ng's transfer log says about the requests from `start` to `end` (byte
    offsets in apt-cacher.log: pass `end` as `since` to count only what happens next).

    A request is a *miss* when apt-cacher-ng fetched the file from upstream to answer it, a
    *hit* when it answered from the cache alone. apt-cacher-ng writes one `I` line (bytes in from
    upstream) followed by one `O` line (bytes out to the client) per request, or only the `O`
    line when nothing came from upstream; its own report page counts the same way."""

    start: int = 0
    end: int = 0
    requests: int = 0
    hits: int = 0
    misses: int = 0
    errors: int = 0  # requests answered with an error (e.g. 404 from upstream)
    served_bytes: int = 0  # to clients
    hit_bytes: int = 0  # of which from the cache alone
    fetched_bytes: int = 0  # from upstream
    # Per path as apt-cacher-ng names it (<host>/<path>, without the upstream's port):
    fetched: Counter[str] = field(default_factory=Counter)  # times fetched from upstream
    served_from_cache: Counter[str] = field(default_factory=Counter)  # hits

    @property
    def packages_fetched(self) -> list[str]:
        """Package files that came from upstream: empty means "downloaded nothing" (index
        files are revalidated and do not count)."""
        return sorted(p for p in self.fetched if p.endswith(PACKAGE_SUFFIXES))

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.start, "until": self.end, "requests": self.requests,
            "hits": self.hits, "misses": self.misses, "errors": self.errors,
            "served_bytes": self.served_bytes, "hit_bytes": self.hit_bytes,
            "fetched_bytes": self.fetched_bytes, "fetched": dict(sorted(self.fetched.items())),
            "packages_fetched": self.packages_fetched,
            "served_from_cache": dict(sorted(self.served_from_cache.items())),
        }


# `<unix time>|<type>|<bytes>|<client>|<host/path>[ [note]]`, e.g.
# `1796596226|I|1200|127.0.0.1|127.0.0.1/pool/main/h/hello/hello_1.0_all.deb`;
# errors carry a note: `...|127.0.0.1/dists/bookworm/InRelease [HTTP error, code: 404]`.
_NOTE = re.compile(r"^(?P<path>.*?)(?: \[(?P<note>[^\]]*)\])?$")


def read_stats(log_dir: Path, since: int = 0) -> CacheStats:
    """The statistics of apt-cacher-ng's transfer log in `log_dir` from byte offset `since`."""
    path = log_dir / LOG_FILE
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return CacheStats(start=0, end=0)
    if since > size:  # the log was truncated or replaced: count it all
        since = 0
    with path.open("rb") as f:
        f.seek(since)
        data = f.read()
    # A line still being written has no newline yet: leave it for the next reading.
    complete = data[: data.rfind(b"\n") + 1]
    stats = CacheStats(start=since, end=since + len(complete))
    fetched_for: tuple[str, str] | None = None  # the (client, path) of the line before, if `I`
    for raw in complete.decode("utf-8", "replace").splitlines():
        parts = raw.split("|", 4)
        if len(parts) < 3 or not parts[2].isdigit():
            fetched_for = None
            continue
        kind, size_ = parts[1], int(parts[2])
        client = parts[3] if len(parts) > 3 else ""
        match = _NOTE.match(parts[4] if len(parts) > 4 else "")
        name = match.group("path") if match else ""
        if kind == "I":
            stats.fetched_bytes += size_
            stats.fetched[name] += 1
            fetched_for = (client, name)
            continue
        if kind == "O":
            stats.requests += 1
            stats.served_bytes += size_
            if fetched_for == (client, name):
                stats.misses += 1
            else:
                stats.hits += 1
                stats.hit_bytes += size_
                stats.served_from_cache[name] += 1
        elif kind == "E":
            stats.errors += 1
        fetched_for = None
    return stats


def directory_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(dirpath) / name).lstat().st_size
            except OSError:
                continue  # removed while we walked (apt-cacher-ng expires or replaces files)
    return total


# --- the server --------------------------------------------------------------------------------


def find_executable(name: str = EXECUTABLE) -> str:
    found = shutil.which(name)
    if found:
        return found
    if name == EXECUTABLE and SBIN.is_file():
        return str(SBIN)
    raise CacheError(
        f"{name} is not installed: the package cache is Debian's apt-cacher-ng "
        f"(sudo apt-get install {DEBIAN_PACKAGE}, or run scripts/setup); or set "
        "packaging.cache.enabled: false")


def _probe_host(listen: str) -> str:
    """Where to reach a server listening on `listen` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(listen, listen)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def is_apt_cacher_ng(url: str) -> bool:
    """Whether the server at `url` is an apt-cacher-ng: its usage page names it (it answers a
    plain `GET /` with 406 and that page)."""
    try:
        with urllib.request.urlopen(url + "/", timeout=2) as response:
            body = response.read(65536)
    except urllib.error.HTTPError as exc:
        body = exc.read(65536)
    except (OSError, ValueError):
        return False
    return b"Apt-Cacher NG" in body


class PackageCache:
    """One apt-cacher-ng process serving the cache under `root`:

        root/conf/acng.conf   written by lockmaster on every start (edit lockmaster.yaml instead)
        root/cache/           the cached files (CacheDir)
        root/log/             apt-cacher.log (transfers: the statistics), apt-cacher.err,
                              apt-cacher-ng.out (what the process printed)
        root/apt-cacher-ng.pid
    """

    def __init__(self, root: Path, listen: str = "127.0.0.1", port: int = 3142,
                 upstream_ports: tuple[int, ...] | list[int] = (80,),
                 executable: str = EXECUTABLE) -> None:
        self.root = root
        self.listen = listen
        self.port = port
        self.upstream_ports = sorted(set(upstream_ports))
        self.executable = executable
        self.process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def pid_file(self) -> Path:
        return self.root / "apt-cacher-ng.pid"

    @property
    def output_file(self) -> Path:
        return self.log_dir / "apt-cacher-ng.out"

    @property
    def url(self) -> str:
        host = _probe_host(self.listen)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def stats(self, since: int = 0) -> CacheStats:
        return read_stats(self.log_dir, since)

    def write_config(self) -> Path:
        """acng.conf for this cache. apt-cacher-ng reads every *.conf in the directory given
        with -c and nothing from /etc/apt-cacher-ng, so this file is the whole configuration."""
        for d in (self.conf_dir, self.cache_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        lines = [
            "# Written by lockmaster on every start of its package cache: edit packaging.cache",
            "# in lockmaster.yaml instead.",
            f"CacheDir: {self.cache_dir}",
            f"LogDir: {self.log_dir}",
            f"Port: {self.port}",
            f"BindAddress: {self.listen}",
            f"PidFile: {self.pid_file}",
            # No admin socket: nothing of ours uses it, the system service's default path
            # (/run/apt-cacher-ng/socket) is not ours, and a path deep in a state directory can
            # exceed the 108-byte limit of socket paths.
            "SocketPath:",
            "ForeGround: 1",
            # The mirror's own port besides 80: apt-cacher-ng refuses other upstream ports
            # unless listed (a local mirror, the tests' repository on a random port).
            f"AllowUserPorts: {' '.join(map(str, self.upstream_ports))}",
            # One line per transfer with the client and path (the statistics need the path),
            # written at once rather than when the client disconnects.
            "VerboseLog: 1",
            "UnbufferLogs: 1",
            "ReportPage: acng-report.html",
            # Days an unreferenced package file is kept once no index lists it any more.
            "ExThreshold: 4",
        ]
        if SUPPORT_DIR.is_dir():
            lines.append(f"SupportDir: {SUPPORT_DIR}")
        conf = self.conf_dir / "acng.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _check_port(self) -> None:
        if not 0 < self.port <= MAX_PORT:
            raise CacheError(
                f"port {self.port}: apt-cacher-ng cannot listen on ports above {MAX_PORT} "
                "(it reads the port as a signed 16-bit number); set packaging.cache.port "
                "to a lower port (default 3142)")
        high = [p for p in self.upstream_ports if p > MAX_PORT]
        if high:
            raise CacheError(
                f"the mirror's port {high[0]}: apt-cacher-ng cannot fetch from ports above "
                f"{MAX_PORT}; serve the mirror on a lower port, or set "
                "packaging.cache.enabled: false")
        host = _probe_host(self.listen)
        if not _port_open(host, self.port):
            return
        occupant = self._occupant()
        raise CacheError(f"port {self.port} on {self.listen} is already in use{occupant}; "
                         f"stop {'it' if occupant else 'what uses it'}, or set "
                         "packaging.cache.port to a free port (below 32768)")

    def _occupant(self) -> str:
        """Who holds our port, when we can tell: a leftover of this very cache (our pid file
        names a live apt-cacher-ng started with our configuration), or another apt-cacher-ng."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            pid, cmdline = 0, []
        if pid and str(self.conf_dir).encode() in cmdline:
            return (f" by apt-cacher-ng pid {pid}, serving this same cache ({self.root}): "
                    "another lockmaster serves it, or one that stopped uncleanly left it "
                    f"running (kill {pid})")
        if is_apt_cacher_ng(self.url):
            return (" by another apt-cacher-ng (Debian's apt-cacher-ng service listens on 3142: "
                    "`sudo systemctl disable --now apt-cacher-ng`, or point packaging.cache.url "
                    "at it and set packaging.cache.serve: false)")
        return ""

    def start(self, timeout: float = 30.0) -> PackageCache:
        """Start apt-cacher-ng and wait until it answers; CacheError says why it did not."""
        executable = find_executable(self.executable)
        self._check_port()
        conf = self.write_config()
        self._output = self.output_file.open("ab")
        try:
            self.process = subprocess.Popen(
                [executable, "-c", str(conf.parent), "ForeGround=1"],
                stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C in a terminal reaches lockmaster, which stops it in
                # order (after the workers that may still be fetching through it).
                start_new_session=True,
            )
        except OSError as exc:
            self._close_output()
            raise CacheError(f"cannot run {executable}: {exc}") from exc
        deadline = time.monotonic() + timeout
        host = _probe_host(self.listen)
        while True:
            code = self.process.poll()
            if code is not None:
                self._close_output()
                raise CacheError(self._exit_message(code))
            if _port_open(host, self.port):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise CacheError(f"apt-cacher-ng did not answer on {self.url} within "
                                 f"{timeout:.0f} s; see {self.output_file} and "
                                 f"{self.log_dir / 'apt-cacher.err'}")
            time.sleep(0.05)

    def _exit_message(self, code: int) -> str:
        try:
            printed = self.output_file.read_text(errors="replace")[-2000:]
        except OSError:
            printed = ""
        if "is busy" in printed or "Address already in use" in printed:
            return (f"port {self.port} on {self.listen} is already in use; stop what uses it, "
                    "or set packaging.cache.port to a free port (below 32768)")
        if "resolving address" in printed:
            return (f"apt-cacher-ng cannot listen on {self.listen!r} port {self.port}; set "
                    "packaging.cache.listen to an address of this machine (e.g. 127.0.0.1)")
        last = " / ".join(line for line in printed.strip().splitlines()[-3:] if line)
        return (f"apt-cacher-ng exited with {code} at start ({last or 'no output'}); "
                f"see {self.output_file}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (apt-cacher-ng closes its logs and removes its pid file), then SIGKILL."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_output()

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> PackageCache:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def upstream_ports(mirror: str | None) -> list[int]:
    """The upstream ports the cache must allow: 80, and the configured mirror's own."""
    ports = {80}
    if mirror:
        parts = urlsplit(mirror)
        ports.add(parts.port or (443 if parts.scheme == "https" else 80))
    return sorted(ports)


def cache_root(config: LockmasterConfig) -> Path:
    """The cache's directory: packaging.cache.dir, default <state-dir>/package-cache."""
    configured = config.packaging.cache.dir
    return config.resolve(configured) if configured else config.state_path / "package-cache"


def package_cache(config: LockmasterConfig) -> PackageCache:
    """The cache `lockmaster run` (or `lockmaster packaging serve-cache`) runs for `config`."""
    cache = config.packaging.cache
    distribution = config.packaging.distribution
    return PackageCache(cache_root(config), cache.listen, cache.port,
                        upstream_ports(distribution.mirror if distribution else None))
