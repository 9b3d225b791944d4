"""The package cache with the real apt-cacher-ng on loopback: apt-get downloads a package from a
local APT repository through it twice, and the repository's server sees the package once; the
cache's statistics (read from apt-cacher-ng's own log) show the second download as a hit. Also:
the errors a user meets (port taken, not installed, a port apt-cacher-ng cannot use), the CLI,
and `lockmaster run`'s auxiliary servers running on when the cache cannot start."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from lockmaster.config.loader import ConfigError, load_config
from lockmaster.config.models import LockmasterConfig
from lockmaster.packaging.cache_server import (
    CacheError,
    CacheStats,
    PackageCache,
    find_executable,
    package_cache,
    read_stats,
)
from lockmaster.workers.aux_servers import LOG_SERVER, PACKAGE_CACHE, start_aux_servers
from tests.ports import free_port, restartable_port

LOCKMASTER = str(Path(sys.executable).with_name("lockmaster"))
CODENAME = "bookworm"
PACKAGE = "lockmaster-cache-probe"
DEB_PATH = f"pool/main/l/{PACKAGE}/{PACKAGE}_1.0_all.deb"


def _installed() -> bool:
    try:
        find_executable()
    except CacheError:
        return False
    return all(shutil.which(t) for t in ("dpkg-deb", "reprepro", "apt-get"))


pytestmark = pytest.mark.skipif(
    not _installed(), reason="apt-cacher-ng, dpkg-deb, reprepro or apt-get is not installed "
    "(scripts/setup installs them)")


def low_port() -> int:
    """A free port apt-cacher-ng can use: 3.7.4 reads ports as signed 16-bit numbers, so it
    can neither listen on nor fetch from a port above 32767, where the kernel's own choice
    (port 0) is. For the cache and for the upstream repository alike."""
    return restartable_port(below=32768)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll until `check` returns something true: apt-cacher-ng writes a request's log line
    when the request ends, a moment after the client has its file."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- the upstream: a local APT repository served by a server that counts requests -------------


@dataclass
class Upstream:
    url: str
    port: int
    requests: Counter[str]


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    """One `Architecture: all` package in a reprepro repository, served over HTTP."""
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr/share/doc" / PACKAGE).mkdir(parents=True)
    (tree / "usr/share/doc" / PACKAGE / "README").write_text("fetched once, served twice\n")
    (tree / "DEBIAN/control").write_text(
        f"Package: {PACKAGE}\nVersion: 1.0\nArchitecture: all\nSection: misc\n"
        "Priority: optional\nMaintainer: lockmaster tests <tests@example.org>\n"
        "Description: a package the package cache tests download\n a test package\n")
    deb = tmp_path / f"{PACKAGE}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)],
                   check=True, capture_output=True)
    repo = tmp_path / "repo"
    (repo / "conf").mkdir(parents=True)
    (repo / "conf/distributions").write_text(
        f"Codename: {CODENAME}\nComponents: main\nArchitectures: amd64\n")
    subprocess.run(["reprepro", "-b", str(repo), "includedeb", CODENAME, str(deb)],
                   check=True, capture_output=True)
    assert (repo / DEB_PATH).is_file()
    requests: Counter[str] = Counter()
    lock = threading.Lock()

    class Counting(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                requests[self.path] += 1
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", low_port()),
                                 functools.partial(Counting, directory=str(repo)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield Upstream(f"http://127.0.0.1:{port}", port, requests)
    finally:
        server.shutdown()
        server.server_close()


def lockmaster_config(tmp_path: Path, port: int, mirror: str, **logs: Any) -> Path:
    data: dict[str, Any] = {
        "state-dir": str(tmp_path / "state"),
        "packaging": {
            "distribution": {"mirror": mirror, "keyring": None},
            "cache": {"listen": "127.0.0.1", "port": port},
        },
    }
    if logs:
        data["logs"] = logs
    file = tmp_path / "lockmaster.yaml"
    file.write_text(yaml.safe_dump(data))
    return file


# --- apt-get in a tree of its own --------------------------------------------------------------


class Apt:
    """apt-get with APT_CONFIG pointing at a file in `root`: every apt path is under `root`, and
    the host's /etc/apt (configuration, sources, proxies) is never read."""

    def __init__(self, root: Path, source: str) -> None:
        self.root = root
        for d in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
                  "etc/apt/trusted.gpg.d", "var/lib/apt/lists/partial",
                  "var/cache/apt/archives/partial", "var/lib/dpkg", "var/log/apt"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "var/lib/dpkg/status").touch()
        (root / "etc/apt/sources.list").write_text(f"deb [trusted=yes] {source} {CODENAME} main\n")
        self.conf = root / "apt.conf"
        self.conf.write_text(
            f'Dir "{root}/";\n'
            f'Dir::State::status "{root}/var/lib/dpkg/status";\n'
            'APT::Architecture "amd64";\n'
            'APT::Architectures { "amd64"; };\n'
            'APT::Sandbox::User "root";\n'
            'Debug::NoLocking "true";\n'
            'Acquire::Languages "none";\n'
            'Acquire::Retries "0";\n'
            # The cache is reached by its URL form, never through a proxy of the host's.
            'Acquire::http::Proxy "DIRECT";\n')

    def run(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update(APT_CONFIG=str(self.conf), DEBIAN_FRONTEND="noninteractive")
        proc = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, f"apt-get {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
        return proc.stdout

    @property
    def archives(self) -> Path:
        return self.root / "var/cache/apt/archives"

    def download(self) -> Path:
        """What a build or install root does: update the indices, fetch the package."""
        self.run("update")
        self.run("install", "--download-only", "-y", PACKAGE)
        debs = list(self.archives.glob(f"{PACKAGE}_*.deb"))
        assert len(debs) == 1, debs
        return debs[0]


def deb_in(counter: Counter[str]) -> int:
    """How often the package file appears in a statistics counter (apt-cacher-ng names files
    <host>/<path>, without the upstream's port)."""
    return sum(n for path, n in counter.items() if path.endswith("/" + DEB_PATH))


# --- the tests -----------------------------------------------------------------------------


def test_the_second_download_comes_from_the_cache(tmp_path: Path, upstream: Upstream) -> None:
    config_file = lockmaster_config(tmp_path, low_port(), upstream.url)
    config = load_config(config_file)
    # The form build and install roots use: http://<cache>/<upstream host:port>/<path>.
    source = config.packaging.mirror_for_roots()
    assert source == f"{config.packaging.cache.base_url()}/127.0.0.1:{upstream.port}"
    cache = package_cache(config)
    assert upstream.port in cache.upstream_ports  # apt-cacher-ng allows only listed ports
    with cache:
        apt = Apt(tmp_path / "apt", source)
        first = apt.download()
        assert first.read_bytes() == (tmp_path / "repo" / DEB_PATH).read_bytes()
        one: CacheStats = wait_for(lambda: (s := cache.stats()) and deb_in(s.fetched) and s,
                                   "the first download in the cache's log")
        assert deb_in(one.fetched) == 1 and one.misses >= 1
        assert any(p.endswith("/" + DEB_PATH) for p in one.packages_fetched)

        # A second build: apt's own archive cache emptied, the same package again.
        apt.run("clean")
        assert not list(apt.archives.glob("*.deb"))
        second = apt.download()
        assert second.read_bytes() == (tmp_path / "repo" / DEB_PATH).read_bytes()
        two: CacheStats = wait_for(
            lambda: (s := cache.stats(since=one.end)) and deb_in(s.served_from_cache) and s,
            "the second download in the cache's log")

        # The upstream served the package once; the second build downloaded no package.
        assert upstream.requests["/" + DEB_PATH] == 1, upstream.requests
        assert deb_in(two.served_from_cache) == 1 and deb_in(two.fetched) == 0
        assert two.packages_fetched == []
        assert two.hits >= 1
        everything = cache.stats()
        assert deb_in(everything.fetched) == 1 and deb_in(everything.served_from_cache) == 1
        assert (cache.cache_dir / f"127.0.0.1/{DEB_PATH}").is_file()

        # The operator's view: `lockmaster packaging cache --json`.
        shown = subprocess.run([LOCKMASTER, "packaging", "cache", "--json", "--config",
                                str(config_file)], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        report = json.loads(shown.stdout)
        assert report["answering"] is True
        assert report["url"] == config.packaging.cache.base_url()
        assert report["roots_mirror"] == source
        assert report["size_bytes"] >= (tmp_path / "repo" / DEB_PATH).stat().st_size
        assert report["stats"]["hits"] >= 1
        assert report["stats"]["packages_fetched"] == everything.packages_fetched
        text = subprocess.run([LOCKMASTER, "packaging", "cache", "--config", str(config_file)],
                              capture_output=True, text=True, timeout=60)
        assert text.returncode == 0, text.stderr
        assert f"package cache: {report['url']} (answering" in text.stdout
        assert f"{everything.requests} requests answered: {everything.hits} from the cache" \
            in text.stdout
    # Stopped: the process is gone and removed its pid file.
    assert cache.process is None and not cache.pid_file.exists()


def test_a_taken_port_is_a_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    port = low_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        cache = PackageCache(tmp_path / "cache", "127.0.0.1", port)
        with pytest.raises(CacheError) as error:
            cache.start()
    message = str(error.value)
    assert f"port {port} on 127.0.0.1 is already in use" in message
    assert "packaging.cache.port" in message
    assert cache.process is None
    assert not (tmp_path / "cache").exists()


def test_a_port_taken_by_this_same_cache_names_its_process(tmp_path: Path) -> None:
    port = low_port()
    with PackageCache(tmp_path / "cache", "127.0.0.1", port) as first:
        assert first.process is not None
        with pytest.raises(CacheError) as error:
            PackageCache(tmp_path / "cache", "127.0.0.1", port).start()
        assert f"apt-cacher-ng pid {first.process.pid}, serving this same cache" in str(
            error.value)


def test_not_installed_names_the_debian_package(tmp_path: Path) -> None:
    cache = PackageCache(tmp_path / "cache", "127.0.0.1", low_port(),
                         executable="apt-cacher-ng-not-installed")
    with pytest.raises(CacheError) as error:
        cache.start()
    assert "apt-get install apt-cacher-ng" in str(error.value)
    assert "packaging.cache.enabled: false" in str(error.value)


def test_a_port_apt_cacher_ng_cannot_use_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CacheError) as error:
        PackageCache(tmp_path / "cache", "127.0.0.1", 40000).start()
    assert "above 32767" in str(error.value)
    with pytest.raises(CacheError) as error:
        PackageCache(tmp_path / "cache", "127.0.0.1", low_port(),
                     upstream_ports=[80, 40000]).start()
    assert "the mirror's port 40000" in str(error.value)
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ConfigError) as refused:
        load_config(lockmaster_config(tmp_path, low_port(), "http://127.0.0.1:40000/debian"))
    assert "cannot fetch from ports above 32767" in str(refused.value)
    # In the configuration, with the file's line, before anything starts.
    file = tmp_path / "lockmaster.yaml"
    file.write_text(yaml.safe_dump({"state-dir": str(tmp_path / "state"),
                                    "packaging": {"cache": {"port": 40000}}}))
    proc = subprocess.run([LOCKMASTER, "packaging", "cache", "--config", str(file)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "packaging" in proc.stderr and "32767" in proc.stderr
    assert not (tmp_path / "state").exists()


def test_run_keeps_its_other_servers_when_the_cache_cannot_start(tmp_path: Path) -> None:
    port, logs_port = low_port(), free_port()
    config = load_config(lockmaster_config(
        tmp_path, port, "http://deb.debian.org/debian",
        url=f"http://127.0.0.1:{logs_port}", serve={"listen": "127.0.0.1", "port": logs_port}))
    reported: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        servers = start_aux_servers(config, "all", reported.append)
    try:
        assert len(reported) == 1 and servers.failed == reported
        assert "the package cache (apt-cacher-ng) did not start" in reported[0]
        assert f"port {port}" in reported[0] and "packaging.cache.port" in reported[0]
        assert "the rest keeps running" in reported[0]
        assert servers.url(PACKAGE_CACHE) is None and servers.cache is None
        # The log server started and serves.
        assert servers.url(LOG_SERVER) == f"http://127.0.0.1:{logs_port}"
        (config.logs_root / "hello.txt").write_text("still here\n")
        with urllib.request.urlopen(f"http://127.0.0.1:{logs_port}/hello.txt", timeout=5) as r:
            assert r.read() == b"still here\n"
    finally:
        servers.stop()


def test_run_starts_and_stops_the_cache(tmp_path: Path) -> None:
    config: LockmasterConfig = load_config(lockmaster_config(
        tmp_path, low_port(), "http://deb.debian.org/debian"))
    servers = start_aux_servers(config, "all")
    try:
        assert servers.failed == []
        assert servers.url(PACKAGE_CACHE) == config.packaging.cache.base_url()
        assert servers.cache is not None and servers.cache.process is not None
        process = servers.cache.process
        assert process.poll() is None
        assert servers.cache.root == config.state_path / "package-cache"
    finally:
        servers.stop()
    assert process.poll() is not None
    # Not served by lockmaster (docker-compose runs it): nothing starts.
    config.packaging.cache.serve = False
    idle = start_aux_servers(config, "all")
    assert idle.cache is None and idle.failed == []


def test_serve_cache_runs_until_terminated(tmp_path: Path) -> None:
    port = low_port()
    file = lockmaster_config(tmp_path, port, "http://deb.debian.org/debian")
    proc = subprocess.Popen([LOCKMASTER, "packaging", "serve-cache", "--config", str(file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "state/package-cache/apt-cacher-ng.pid"
    try:
        wait_for(pid_file.exists, "apt-cacher-ng's pid file")
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"listening on 127.0.0.1:{port}" in out and "stopped" in out
    assert not pid_file.exists()


def test_statistics_pair_each_upstream_fetch_with_its_request(tmp_path: Path) -> None:
    """The log format, as apt-cacher-ng 3.7.4 wrote it in the test above: an `I` line (bytes
    from upstream) directly before the `O` line (bytes to the client) of the same request;
    errors as `I` + `E`; a line being written (no newline yet) is left for the next reading."""
    log = tmp_path / "apt-cacher.log"
    log.write_text(
        "1796596320|I|370|127.0.0.1|127.0.0.1/dists/bookworm/InRelease "
        "[HTTP error, code: 404]\n"
        "1796596320|E|628|127.0.0.1|127.0.0.1/dists/bookworm/InRelease "
        "[HTTP error, code: 404]\n"
        "1796596320|I|1225|127.0.0.1|127.0.0.1/dists/bookworm/Release\n"
        "1796596320|O|1076|127.0.0.1|127.0.0.1/dists/bookworm/Release\n"
        "1796596320|I|1200|127.0.0.1|127.0.0.1/pool/main/h/hello/hello_1.0_all.deb\n"
        "1796596320|O|1050|127.0.0.1|127.0.0.1/pool/main/h/hello/hello_1.0_all.deb\n"
        "1796596330|O|1050|10.0.0.7|127.0.0.1/pool/main/h/hello/hello_1.0_all.deb\n"
        "1796596330|O|10")
    stats = read_stats(tmp_path)
    assert (stats.requests, stats.hits, stats.misses, stats.errors) == (3, 1, 2, 1)
    assert stats.fetched_bytes == 370 + 1225 + 1200
    assert stats.served_bytes == 1076 + 1050 + 1050 and stats.hit_bytes == 1050
    assert stats.packages_fetched == ["127.0.0.1/pool/main/h/hello/hello_1.0_all.deb"]
    assert stats.served_from_cache == Counter({"127.0.0.1/pool/main/h/hello/hello_1.0_all.deb": 1})
    assert stats.end == log.stat().st_size - len("1796596330|O|10")
    later = read_stats(tmp_path, since=stats.end)
    assert later.requests == 0 and later.end == stats.end
    # A log replaced by a shorter one is read from its start.
    log.write_text("1796596340|O|5|127.0.0.1|127.0.0.1/pool/x.deb\n")
    assert read_stats(tmp_path, since=stats.end).hits == 1
    assert read_stats(tmp_path / "nothing-here").requests == 0
