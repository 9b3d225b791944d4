"""Helpers for the publishing tests and benchmark: a throwaway signing key, tiny real .deb and
.rpm packages, a git repository with a merged and an unmerged commit, build manifests, and an
HTTP server serving a repository's `current/` (resolving the symlink on every request)."""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockmaster.publishing import SigningKey

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
}


def _run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
         stdin: bytes | None = None) -> str:
    full = {**os.environ, **(env or {})}
    found = subprocess.run([str(c) for c in command], cwd=cwd, env=full, input=stdin,
                           capture_output=True, check=False)
    if found.returncode != 0:
        raise RuntimeError(f"{command} failed: {found.stderr.decode()} {found.stdout.decode()}")
    return found.stdout.decode()


# --- keys ---------------------------------------------------------------------------------


def make_signing_key(directory: Path, uid: str = "Lockmaster Test <test@example.invalid>"
                     ) -> SigningKey:
    """A fresh RSA key without passphrase in its own GNUPGHOME (never ~/.gnupg)."""
    home = directory / "gnupg"
    home.mkdir(parents=True, mode=0o700)
    base = ["gpg", "--homedir", str(home), "--batch"]
    _run(*base, "--passphrase", "", "--quick-gen-key", uid, "rsa2048", "sign", "never")
    listing = _run(*base, "--with-colons", "--list-secret-keys")
    fingerprint = next(line.split(":")[9] for line in listing.splitlines()
                       if line.startswith("fpr:"))
    public = directory / "public.asc"
    public.write_text(_run(*base, "--armor", "--export", fingerprint))
    return SigningKey(gnupghome=home, fingerprint=fingerprint, public_key=public)


def stop_gpg_agent(key: SigningKey) -> None:
    subprocess.run(["gpgconf", "--homedir", str(key.gnupghome), "--kill", "all"],
                   capture_output=True, check=False)


# --- packages -----------------------------------------------------------------------------


def build_deb(out: Path, name: str, version: str, arch: str = "all",
              payload: str = "") -> Path:
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "tree"
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "usr/share" / name).mkdir(parents=True)
        (tree / "usr/share" / name / "data").write_text(payload or f"{name} {version}\n")
        (tree / "DEBIAN/control").write_text(
            f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
            f"Maintainer: Test <test@example.invalid>\nDescription: test package {name}\n")
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"{name}_{version}_{arch}.deb"
        _run("dpkg-deb", "-Zgzip", "--root-owner-group", "--build", tree, target)
    return target


_SPEC_HEAD = """Name: {name}
Version: {version}
Release: {release}
Summary: test package {name}
License: MIT
BuildArch: {arch}
%description
test package {name}
"""


def build_rpm(out: Path, name: str, version: str, release: str = "1", arch: str = "noarch",
              payload: str = "") -> Path:
    return build_rpms(out, [(name, version, release)], arch=arch, payload=payload)[0]


def build_rpms(out: Path, packages: Sequence[tuple[str, str, str]], arch: str = "noarch",
               payload: str = "") -> list[Path]:
    """Real RPMs from one throwaway spec each (or, for many, subpackages of one spec)."""
    out.mkdir(parents=True, exist_ok=True)
    built: list[Path] = []
    with tempfile.TemporaryDirectory() as scratch:
        top = Path(scratch)
        (top / "SPECS").mkdir()
        groups: dict[tuple[str, str], list[str]] = {}
        for name, version, release in packages:
            groups.setdefault((version, release), []).append(name)
        for (version, release), names in groups.items():
            main, *subs = names
            spec = _SPEC_HEAD.format(name=main, version=version, release=release, arch=arch)
            for sub in subs:
                spec += (f"%package -n {sub}\nSummary: test package {sub}\n"
                         f"%description -n {sub}\ntest package {sub}\n")
            spec += "%install\n"
            for pkg in names:
                content = (payload or f"{pkg} {version}").replace("'", "")
                spec += (f"mkdir -p %{{buildroot}}/usr/share/{pkg}\n"
                         f"echo '{content}' > %{{buildroot}}/usr/share/{pkg}/data\n")
            spec += f"%files\n/usr/share/{main}/data\n"
            for sub in subs:
                spec += f"%files -n {sub}\n/usr/share/{sub}/data\n"
            spec_file = top / "SPECS" / f"{main}.spec"
            spec_file.write_text(spec)
            _run("rpmbuild", "--define", f"_topdir {top}", "--define", "_build_id_links none",
                 "-bb", spec_file)
            for pkg in names:
                found = next((top / "RPMS" / arch).glob(f"{pkg}-{version}-{release}.*.rpm"))
                target = out / found.name
                shutil.copyfile(found, target)
                built.append(target)
    return built


class PackageCache:
    """Packages built once per test process (rpmbuild takes ~0.2 s each)."""

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._built: dict[tuple[str, ...], Path] = {}
        self._lock = threading.Lock()

    def _base(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="lm-test-packages-"))
            atexit.register(shutil.rmtree, self._dir, True)
        return self._dir

    def deb(self, name: str, version: str, arch: str = "all", payload: str = "") -> Path:
        key = ("deb", name, version, arch, payload)
        with self._lock:
            if key not in self._built:
                out = self._base() / f"deb-{len(self._built)}"
                self._built[key] = build_deb(out, name, version, arch, payload)
            return self._built[key]

    def rpm(self, name: str, version: str, release: str = "1", payload: str = "") -> Path:
        key = ("rpm", name, version, release, payload)
        with self._lock:
            if key not in self._built:
                out = self._base() / f"rpm-{len(self._built)}"
                self._built[key] = build_rpm(out, name, version, release, payload=payload)
            return self._built[key]


PACKAGES = PackageCache()


# --- git ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GitRepo:
    path: Path
    merged: str  # a commit reachable from main
    unmerged: str  # a commit only on a review branch


def make_git_repo(path: Path) -> GitRepo:
    path.mkdir(parents=True)
    git = functools.partial(_run, "git", "-C", path, env=GIT_ENV)
    git("init", "-q", "-b", "main")
    (path / "README").write_text("one\n")
    git("add", "README")
    git("commit", "-q", "-m", "first")
    merged = git("rev-parse", "HEAD").strip()
    git("checkout", "-q", "-b", "review")
    (path / "README").write_text("two\n")
    git("commit", "-q", "-am", "not merged")
    unmerged = git("rev-parse", "HEAD").strip()
    git("checkout", "-q", "main")
    return GitRepo(path, merged, unmerged)


def add_commit(repo: GitRepo, message: str) -> str:
    git = functools.partial(_run, "git", "-C", repo.path, env=GIT_ENV)
    (repo.path / "README").write_text(message + "\n")
    git("commit", "-q", "-am", message)
    return git("rev-parse", "HEAD").strip()


# --- manifests ----------------------------------------------------------------------------


def package_fields(path: Path) -> tuple[str, str, str, str]:
    """(format, name, version, arch) from the package itself."""
    if path.suffix == ".deb":
        fields = dict(line.split(": ", 1) for line in _run(
            "dpkg-deb", "--field", path, "Package", "Version", "Architecture").splitlines())
        return "deb", fields["Package"], fields["Version"], fields["Architecture"]
    out = _run("rpm", "-qp", "--nosignature", "--nodigest", "--qf",
               r"%{NAME}\n%{VERSION}-%{RELEASE}\n%{ARCH}\n", path).splitlines()
    return "rpm", out[0], out[1], out[2]


def write_manifest(directory: Path, commit: str | None, files: Sequence[Path],
                   **extra: object) -> Path:
    """A build manifest as the package builder writes it, for files under `directory`."""
    entries = []
    for path in files:
        fmt, name, version, arch = package_fields(path)
        data = path.read_bytes()
        entries.append({"file": path.relative_to(directory).as_posix(), "format": fmt,
                        "name": name, "version": version, "arch": arch,
                        "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                        "builder": "test"})
    manifest = {"packages": entries, "schema": 1, **extra}
    if commit is not None:
        manifest["source_commit"] = commit
    target = directory / "manifest.json"
    target.write_text(json.dumps(manifest, indent=1))
    return target


def build_dir(base: Path, name: str, packages: Sequence[Path], commit: str | None,
              **extra: object) -> Path:
    """A package builder's output directory: deb/ and rpm/ plus manifest.json."""
    directory = base / name
    placed = []
    for package in packages:
        sub = directory / ("deb" if package.suffix == ".deb" else "rpm")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package, sub / package.name)
        placed.append(sub / package.name)
    return write_manifest(directory, commit, placed, **extra)


# --- HTTP ---------------------------------------------------------------------------------


class _CurrentHandler(http.server.SimpleHTTPRequestHandler):
    """Serves `<root>/current/`, resolving the symlink once per request (so each response
    comes entirely from one snapshot, like a web server following the link)."""

    root: Path

    def __init__(self, *args: object, **kwargs: object) -> None:
        directory = os.path.realpath(self.root / "current")
        super().__init__(*args, directory=directory, **kwargs)  # type: ignore[arg-type]

    def log_message(self, format: str, *args: object) -> None:
        return None


@contextlib.contextmanager
def serve_current(root: Path) -> Iterator[str]:
    handler = type("Handler", (_CurrentHandler,), {"root": root})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- inspection ---------------------------------------------------------------------------


def tree_state(root: Path) -> dict[str, tuple[int, int, float]]:
    """Every entry under root: (inode, size, mtime); symlinks by their target's hash."""
    found: dict[str, tuple[int, int, float]] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == ".lock":
            continue
        st = path.lstat()
        if path.is_symlink():
            found[rel] = (hash(os.readlink(path)), 0, 0.0)
        elif path.is_file():
            found[rel] = (st.st_ino, st.st_size, st.st_mtime)
        else:
            found[rel] = (0, 0, 0.0)
    return found
