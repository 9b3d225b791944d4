"""The target distribution in the tests: a local APT repository of real Debian packages.

`scripts/setup --test` runs `python -m tests.distribution fetch` once per machine: mmdebstrap
downloads (from the machine's Debian mirror, a registry this machine may use at set-up time) every
package of a `buildd` root plus the build dependencies of the packages the tests build, and
`apt-get source` fetches GNU hello's Debian source package for the slow real-package test. The
tests then make a repository of those .debs with reprepro and serve it on loopback: builds and
install tests resolve real dependencies (libc6, debhelper, ...) and never reach upstream.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.ports import restartable_port

CODENAME = "bookworm"
UPSTREAM = "http://deb.debian.org/debian"
# What the tests' builds need from the distribution besides a buildd root (build-essential):
# debhelper for every DEB build; help2man and texinfo for GNU hello (Debian's hello 2.10-3).
INCLUDE = ["debhelper", "help2man", "texinfo"]
HELLO_SOURCE = "hello"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lockmaster" / \
    "test-distribution" / CODENAME
DEBS = CACHE / "debs"
SOURCES = CACHE / "sources"
READY = CACHE / "ready"


def available() -> bool:
    return READY.is_file() and any(DEBS.glob("*.deb"))


def missing_reason() -> str:
    return (f"the tests' Debian packages are not in {CACHE}: run `./scripts/setup --test` "
            "(it runs `python -m tests.distribution fetch`)")


def fetch() -> None:
    """Download once: the .debs of a buildd root + INCLUDE, and hello's source package."""
    if available():
        print(f"test distribution: {len(list(DEBS.glob('*.deb')))} packages in {DEBS}")
        return
    if os.geteuid() != 0:  # mmdebstrap's root mode; the tests that use it need root anyway
        print("test distribution: not downloaded (needs root); the clean-root tests skip")
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(DEBS, ignore_errors=True)
    DEBS.mkdir()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["mmdebstrap", "--variant=buildd", "--include=" + ",".join(INCLUDE),
             "--skip=essential/unlink", "--skip=cleanup/apt/cache",
             f"--customize-hook=sync-out /var/cache/apt/archives {DEBS}",
             CODENAME, str(Path(tmp) / "root.tar"), UPSTREAM],
            check=True)  # fmt: skip
        for extra in DEBS.iterdir():
            if not extra.name.endswith(".deb"):
                shutil.rmtree(extra, ignore_errors=True) if extra.is_dir() else extra.unlink()
        lists = Path(tmp) / "lists"
        (lists / "partial").mkdir(parents=True)
        sources_list = Path(tmp) / "sources.list"
        sources_list.write_text(f"deb-src {UPSTREAM} {CODENAME} main\n")
        apt = ["apt-get", "-q", "-o", f"Dir::Etc::SourceList={sources_list}",
               "-o", "Dir::Etc::SourceParts=/dev/null", "-o", f"Dir::State::Lists={lists}"]
        subprocess.run([*apt, "update"], check=True)
        SOURCES.mkdir(exist_ok=True)
        subprocess.run([*apt, "source", "--download-only", HELLO_SOURCE], cwd=SOURCES,
                       check=True)
    READY.write_text("ok\n")
    print(f"test distribution: {len(list(DEBS.glob('*.deb')))} packages in {DEBS}")


def hello_source(dest: Path) -> Path:
    """GNU hello's Debian source package, fully unpacked (debian/ included) at dest."""
    [dsc] = sorted(SOURCES.glob(f"{HELLO_SOURCE}_*.dsc"))
    # dpkg-source leaves the orig tarball beside the tree it unpacks: unpack elsewhere, so dest
    # is the unpacked tree alone (seed 003: no orig.tar.gz next to the sources in git).
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-source", "--no-check", "-x", str(dsc), f"{tmp}/tree"],
                       check=True, capture_output=True)
        shutil.move(f"{tmp}/tree", dest)
    return dest


def make_repo(dest: Path, debs: list[Path] | None = None) -> Path:
    """An APT repository (reprepro, unsigned) of the distribution's packages at dest."""
    conf = dest / "conf"
    conf.mkdir(parents=True)
    (conf / "distributions").write_text(
        f"Origin: Debian\nLabel: Debian\nCodename: {CODENAME}\nArchitectures: amd64 arm64\n"
        "Components: main\nDescription: the tests' copy of Debian packages\n")
    files = [str(p) for p in (debs if debs is not None else sorted(DEBS.glob("*.deb")))]
    # No -S/-P: they would override the packages' own Priority, which decides what minbase is.
    subprocess.run(["reprepro", "-b", str(dest), "includedeb", CODENAME, *files],
                   check=True, capture_output=True)
    return dest


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory and counts what it served (the cache's upstream, in the tests).
    HTTP/1.1 keep-alive, as real mirrors: apt-cacher-ng sends several requests on one
    connection, and one closed after each answer fails the rest with 503."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


class QuietServer(http.server.ThreadingHTTPServer):
    """A client that hangs up mid-transfer (apt-cacher-ng aborting a download) is no error."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def serve(directory: Path, port: int = 0) -> Iterator[tuple[str, list[str]]]:
    """Serve `directory` on a loopback port (default: a free one); yields (URL, the paths
    requested)."""
    handler = functools.partial(CountingHandler, directory=str(directory))
    server = QuietServer(("127.0.0.1", port), handler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.requests  # type: ignore
    finally:
        server.shutdown()
        server.server_close()


# Prepared roots of the tests' distribution: kept between runs (content-addressed by its
# package indexes, so they are reused as long as the downloaded packages are the same).
ROOTS = CACHE / "roots"
_served: dict[str, tuple[str, list[str]]] = {}
_lock = threading.Lock()
_keep: list[object] = []


def local_distribution() -> tuple[str, list[str]]:
    """The URL of the tests' distribution repository, made and served once per process, and
    the paths it served so far."""
    with _lock:
        if "repo" not in _served:
            if not available():
                raise RuntimeError(missing_reason())
            repo = make_repo(Path(tempfile.mkdtemp(prefix="lockmaster-test-distribution-")))
            # Served as long as the test process lives (the context manager is kept: were it
            # collected, its cleanup would stop the server).
            # Below 32768: apt-cacher-ng 3.7.4 cannot fetch from a higher port (cache_server.py).
            server = serve(repo, restartable_port())
            _keep.append(server)
            _served["repo"] = server.__enter__()
        return _served["repo"]


def packaging_config(*, cache: dict | None = None) -> dict:
    """`packaging:` for a test deployment whose jobs build and install-test in clean roots of
    the tests' distribution (no package cache unless given)."""
    return {
        "distribution": {"mirror": local_distribution()[0], "keyring": None},
        "cache": cache or {"enabled": False},
        "roots": {"dir": str(ROOTS)},
    }


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        sys.exit("usage: python -m tests.distribution fetch")
    fetch()
