"""pkgtool.py, the single-file package tool that packaging jobs run on build nodes.

Everything here runs the real tools (dpkg-buildpackage, rpmbuild, lintian, rpmlint, reprepro,
createrepo_c, apt-get/dpkg, dnf/rpm), invoking pkgtool the way the executor does:
``python3 pkgtool.py COMMAND ...`` in a scratch directory.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKGTOOL = ROOT / "lockmaster" / "packaging" / "pkgtool.py"
TOOL_FILES = sorted(PKGTOOL.parent.glob("pkg*.py"))
HELLO = ROOT / "lockmaster" / "demo" / "packages" / "hello"
PACKAGE = "lockmaster-hello"

TOOLS = ["dpkg-buildpackage", "rpmbuild", "lintian", "rpmlint", "reprepro", "createrepo_c",
         "apt-get", "dnf", "git"]  # fmt: skip
pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS), reason="packaging tools are not installed"
)


def pkgtool(
    *args: object, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(PKGTOOL), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    # Shown by pytest when a test fails.
    print(f"$ pkgtool.py {' '.join(map(str, args))}  -> {proc.returncode}")
    print(proc.stdout[-6000:])
    print(proc.stderr[-3000:], file=sys.stderr)
    return proc


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def variant(dest: Path, edits: dict[str, Callable[[str], str] | str]) -> Path:
    """A copy of the hello source tree with files replaced or edited."""
    shutil.copytree(HELLO, dest)
    for rel, edit in edits.items():
        path = dest / rel
        if callable(edit):
            before = path.read_text()
            after = edit(before)
            assert after != before, f"edit of {rel} changed nothing"
            path.write_text(after)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(edit)
            if "/post" in rel or rel.startswith("smoke/"):
                path.chmod(0o755)
    return dest


def replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, f"{old!r} not found"
        return text.replace(old, new)

    return edit


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def host_dpkg_log_mentions(word: str) -> int:
    log = Path("/var/log/dpkg.log")
    return log.read_text(errors="replace").count(word) if log.exists() else 0


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("packaging")


@pytest.fixture(scope="module")
def hello_checkout(work: Path) -> tuple[Path, str]:
    """The hello source tree in a git checkout of its own (for source_commit)."""
    src = work / "hello-src"
    shutil.copytree(HELLO, src)
    git(src, "init", "-q")
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "hello")
    return src, git(src, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def built(work: Path, hello_checkout: tuple[Path, str]) -> Path:
    src, _ = hello_checkout
    out = work / "out"
    proc = pkgtool("build", src, out, cwd=work)
    assert proc.returncode == 0
    return out


@pytest.fixture(scope="module")
def repo(work: Path, built: Path) -> Path:
    repo = work / "repo"
    proc = pkgtool("test-repo", built, repo, "--codename", "bookworm", cwd=work)
    assert proc.returncode == 0
    return repo


@pytest.fixture
def http_repo(repo: Path) -> Iterator[tuple[str, list[str]]]:
    """REPO served over HTTP on 127.0.0.1 from a thread: (base URL, requested paths)."""
    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            requested.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=repo))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requested
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------
# Bad usage and the tool's shape (fast)


def test_pkgtool_is_stdlib_only_files_that_run_alone(tmp_path: Path) -> None:
    from lockmaster.execution.tools import TOOLS

    assert PKGTOOL in TOOLS
    own = {t.stem for t in TOOLS}
    for tool in TOOLS:
        imported = set()
        for node in ast.walk(ast.parse(tool.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, "relative import"
                imported.add((node.module or "").split(".")[0])
        assert imported - set(sys.stdlib_module_names) - own == set(), tool.name
    # As uploaded to a node: the tool files alone, no site-packages, no lockmaster.
    for tool in TOOLS:
        shutil.copy(tool, tmp_path / tool.name)
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(tmp_path / "pkgtool.py"), "--help"],
        capture_output=True, text=True, cwd="/",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for command in ("build", "lint", "test-repo", "install-test", "prepare-root"):
        assert command in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "required"),
        (["frobnicate"], "invalid choice"),
        (["build", "{tmp}/missing", "{tmp}/out"], "is not a directory"),
        (["build", "{empty}", "{tmp}/out"], "nothing to build"),
        (["build", "{hello}", "{tmp}/out", "--format", "zip"], "invalid choice"),
        (["build", "{empty}", "{tmp}/out", "--format", "rpm"], "no *.spec file"),
        (["lint", "{empty}"], "manifest.json; run"),
        (["lint", "{tmp}/missing"], "is not a directory"),
        (["test-repo", "{empty}", "{tmp}/repo", "--codename", "bookworm"], "manifest.json"),
        (["test-repo", "{empty}", "{tmp}/repo"], "--codename"),
        (["test-repo", "{empty}", "{tmp}/repo", "--codename", "book/worm"], "not a valid name"),
        (["install-test", "{empty}", "--format", "deb"], "repo.json"),
        (["install-test", "{empty}"], "--format"),
        (["install-test", "ftp://example.org/repo", "--format", "deb"], "unsupported URL"),
        (["install-test", "{tmp}/missing", "--format", "rpm"], "is not a directory"),
        (["install-test", "{empty}", "--format", "deb", "--smoke-dir", "{tmp}/nope"],
         "--smoke-dir"),
    ],
)  # fmt: skip
def test_bad_usage_exits_2_with_a_clear_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.format(tmp=tmp_path, empty=empty, hello=HELLO) for a in args]
    proc = pkgtool(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    # A rejected input creates nothing.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
    assert list(empty.iterdir()) == []


def test_missing_build_dependency_is_named(tmp_path: Path) -> None:
    src = variant(
        tmp_path / "src",
        {
            "debian/control": replace(
                "debhelper-compat (= 13)",
                "debhelper-compat (= 13), lockmaster-no-such-builddep (>= 1.0)",
            )
        },
    )
    proc = pkgtool("build", src, tmp_path / "out", "--format", "deb", cwd=tmp_path)
    assert proc.returncode == 1
    assert "missing build dependencies" in proc.stderr
    assert "lockmaster-no-such-builddep (>= 1.0)" in proc.stderr
    assert "debian/control" in proc.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert "lockmaster-no-such-builddep" in (tmp_path / "out" / "build-deb.log").read_text()


def test_rpm_build_error_exits_1_with_its_log(tmp_path: Path) -> None:
    src = variant(tmp_path / "src", {"Makefile": replace("install -D -m 0755", "false &&")})
    proc = pkgtool("build", src, tmp_path / "out", "--format", "rpm", cwd=tmp_path)
    assert proc.returncode == 1
    assert "rpmbuild failed" in proc.stderr
    assert "build-rpm.log" in proc.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert "Bad exit status" in (tmp_path / "out" / "build-rpm.log").read_text()


# --------------------------------------------------------------------------------------------
# The good path: build, lint, test repository, install test


@pytest.mark.slow
def test_build_writes_binaries_logs_and_an_exact_manifest(
    built: Path, hello_checkout: tuple[Path, str]
) -> None:
    src, commit = hello_checkout
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["source_commit"] == commit
    assert manifest["source_dirty"] is False
    assert manifest["formats"] == ["deb", "rpm"]
    packages = {p["arch"]: p for p in manifest["packages"]}
    assert sorted(packages) == ["all", "noarch", "src"] and len(manifest["packages"]) == 3
    assert packages["all"]["file"] == "deb/lockmaster-hello_1.0.0_all.deb"
    assert packages["noarch"]["file"] == "rpm/lockmaster-hello-1.0.0-1.noarch.rpm"
    # The SRPM is listed too (arch "src"): every package file next to the manifest is in it.
    assert packages["src"]["file"] == "rpm/lockmaster-hello-1.0.0-1.src.rpm"
    assert (packages["src"]["format"], packages["src"]["version"]) == ("rpm", "1.0.0-1")
    packages = {"deb": packages["all"], "rpm": packages["noarch"]}
    for entry in manifest["packages"]:
        path = built / entry["file"]
        assert entry["sha256"] == sha256(path)
        assert entry["size"] == path.stat().st_size
    deb = built / packages["deb"]["file"]
    fields = subprocess.run(
        ["dpkg-deb", "--showformat=${Package} ${Version} ${Architecture}", "--show", deb],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert fields == [packages["deb"][k] for k in ("name", "version", "arch")]
    rpm = built / packages["rpm"]["file"]
    fields = subprocess.run(
        ["rpm", "-qp", "--nosignature", "--qf", "%{NAME} %{VERSION}-%{RELEASE} %{ARCH}", rpm],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert fields == [packages["rpm"][k] for k in ("name", "version", "arch")]
    kinds = sorted((e["kind"], Path(e["file"]).suffix) for e in manifest["extra_files"])
    assert kinds == [("buildinfo", ".buildinfo"), ("changes", ".changes")]
    listed = {e["file"] for e in manifest["packages"] + manifest["extra_files"]}
    produced = {p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file()}
    assert produced - listed == {"manifest.json", "build-deb.log", "build-rpm.log"}
    for entry in manifest["extra_files"]:
        assert entry["sha256"] == sha256(built / entry["file"])
    assert "dpkg-buildpackage -us -uc -b" in (built / "build-deb.log").read_text()
    assert "rpmbuild -ba" in (built / "build-rpm.log").read_text()
    assert not (built / ".scratch").exists()
    # The build ran on a copy: the checkout is untouched.
    assert git(src, "status", "--porcelain", "--ignored") == ""


@pytest.mark.slow
def test_build_refuses_an_output_directory_that_holds_a_build(
    built: Path, hello_checkout: tuple[Path, str]
) -> None:
    before = (built / "manifest.json").read_text()
    proc = pkgtool("build", hello_checkout[0], built, cwd=built.parent)
    assert proc.returncode == 2
    assert "already holds a build" in proc.stderr
    assert (built / "manifest.json").read_text() == before


@pytest.mark.slow
def test_lint_passes_the_example_package_with_the_shipped_rpmlint_config(
    built: Path, tmp_path: Path
) -> None:
    proc = pkgtool("lint", built, cwd=built.parent)
    assert proc.returncode == 0
    assert "lintian --tag-display-limit 0" in proc.stdout
    assert "rpmlint -c " in proc.stdout
    assert "lint summary: deb: 0 error(s)" in proc.stdout
    assert "rpm: 0 error(s)" in proc.stdout
    # Without the shipped configuration, rpmlint rejects the unsigned test build.
    plain = subprocess.run(
        ["rpmlint", *map(str, (built / "rpm").glob("*.rpm"))],
        capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert "E: no-signature" in plain.stdout


@pytest.mark.slow
def test_test_repo_layout_and_repo_json(repo: Path, built: Path) -> None:
    description = json.loads((repo / "repo.json").read_text())
    assert sorted(description) == ["deb", "rpm"]
    manifest = json.loads((built / "manifest.json").read_text())
    deb, rpm = description["deb"], description["rpm"]
    assert (deb["path"], deb["codename"], deb["component"]) == ("deb", "bookworm", "main")
    assert (rpm["path"], rpm["codename"], rpm["component"]) == ("rpm", None, None)
    assert deb["source_commit"] == rpm["source_commit"] == manifest["source_commit"]
    release = (repo / "deb/dists/bookworm/Release").read_text()
    assert "Codename: bookworm" in release and "Components: main" in release
    assert not (repo / "deb/dists/bookworm/Release.gpg").exists()  # unsigned: [trusted=yes]
    arch = deb["architectures"][0]
    index = (repo / f"deb/dists/bookworm/main/binary-{arch}/Packages").read_text()
    assert f"Package: {PACKAGE}\n" in index and "Version: 1.0.0\n" in index
    assert (repo / "rpm/repodata/repomd.xml").is_file()
    assert [p.name for p in (repo / "rpm").glob("*.rpm")] == [
        "lockmaster-hello-1.0.0-1.noarch.rpm"
    ]
    assert {p["sha256"] for p in deb["packages"] + rpm["packages"]} == {
        p["sha256"] for p in manifest["packages"] if p["arch"] != "src"
    }


@pytest.mark.slow
def test_test_repo_refuses_artifacts_that_changed_after_the_build(
    built: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(built, out)
    deb = next((out / "deb").glob("*.deb"))
    deb.write_bytes(deb.read_bytes() + b"tampered")
    proc = pkgtool("test-repo", out, tmp_path / "repo", "--codename", "bookworm", cwd=tmp_path)
    assert proc.returncode == 2
    assert "does not match its sha256" in proc.stderr
    assert not (tmp_path / "repo" / "repo.json").exists()


@pytest.mark.slow
def test_deb_install_test_over_http(
    http_repo: tuple[str, list[str]], work: Path, tmp_path: Path
) -> None:
    url, requested = http_repo
    host_log_before = host_dpkg_log_mentions(PACKAGE)
    proc = pkgtool(
        "install-test", url, "--format", "deb", "--smoke-dir", HELLO / "smoke",
        "--work", tmp_path / "w", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0
    assert "lockmaster-hello said: Hello from lockmaster, CI!" in proc.stdout
    assert "ok     lockmaster-hello 1.0.0 (all): installed, smoke tested, removed, nothing " \
        "left behind" in proc.stdout  # fmt: skip
    # apt really fetched the package from the HTTP server ...
    assert any(p.endswith("lockmaster-hello_1.0.0_all.deb") for p in requested)
    assert any("dists/bookworm" in p for p in requested)
    # ... and into the isolated root only: the worker's own system did not change.
    assert not Path("/usr/bin/lockmaster-hello").exists()
    assert host_dpkg_log_mentions(PACKAGE) == host_log_before
    assert not (tmp_path / "w" / "roots" / "lockmaster-hello_all").exists()  # cleaned on success


@pytest.mark.slow
def test_rpm_install_test_from_a_directory(repo: Path, tmp_path: Path) -> None:
    # Debian's rpm keeps its database in ~/.rpmdb: nothing may appear in HOME either.
    home = tmp_path / "home"
    home.mkdir()
    proc = pkgtool(
        "install-test", repo, "--format", "rpm", "--smoke-dir", HELLO / "smoke",
        "--work", tmp_path / "w", cwd=tmp_path, env={**os.environ, "HOME": str(home)},
    )  # fmt: skip
    assert proc.returncode == 0
    assert "--installroot=" in proc.stdout and "--noplugins" in proc.stdout
    assert "lockmaster-hello said: Hello from lockmaster, CI!" in proc.stdout
    assert "ok     lockmaster-hello 1.0.0-1 (noarch): installed, smoke tested, removed, " \
        "nothing left behind" in proc.stdout  # fmt: skip
    assert not Path("/usr/bin/lockmaster-hello").exists()
    assert list(home.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to become nobody"
)
def test_install_test_without_root_uses_a_user_namespace(repo: Path) -> None:
    probe = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "unshare", "--map-root-user", "true"],
        capture_output=True,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip("unprivileged user namespaces are not available")
    # As on a build node: the system's python3 (nobody cannot read the project's venv).
    python3 = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if python3 is None:
        pytest.skip("no system python3")
    # nobody cannot enter pytest's private tmp directory: use a world-readable one.
    base = Path(tempfile.mkdtemp(prefix="pkgtool-nobody-"))
    try:
        for tool in TOOL_FILES:
            shutil.copy(tool, base / tool.name)
        shutil.copytree(repo, base / "repo")
        shutil.copytree(HELLO / "smoke", base / "smoke")
        subprocess.run(["chown", "-R", "nobody", str(base)], check=True)
        base.chmod(0o755)
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "env", f"HOME={base}", python3, "pkgtool.py", "install-test", "repo",
             "--format", "deb", "--smoke-dir", "smoke", "--work", "w"],
            cwd=base, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        print(proc.stdout[-4000:], proc.stderr[-2000:])
        assert proc.returncode == 0
        assert "unshare --map-root-user apt-get install lockmaster-hello=1.0.0" in proc.stdout
        assert "lockmaster-hello said: Hello from lockmaster, CI!" in proc.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_failing_smoke_script_fails_the_install_test(repo: Path, tmp_path: Path) -> None:
    smoke = tmp_path / "smoke"
    smoke.mkdir()
    (smoke / f"{PACKAGE}.sh").write_text(
        '#!/bin/sh\necho "root: $LOCKMASTER_INSTALL_ROOT package: $LOCKMASTER_PACKAGE"\n'
        "test -x /usr/bin/lockmaster-hello\nexit 3\n"
    )
    proc = pkgtool("install-test", repo, "--format", "deb", "--smoke-dir", smoke,
                   "--work", tmp_path / "w", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1
    assert "root: / package: lockmaster-hello" in proc.stdout
    assert "smoke script" in proc.stdout and "failed (exit 3)" in proc.stdout
    assert "install-test failed for 1 of 1 package(s): lockmaster-hello" in proc.stderr


# --------------------------------------------------------------------------------------------
# Broken packages


def build_and_publish(src: Path, tmp_path: Path, fmt: str) -> Path:
    out, repo = tmp_path / "out", tmp_path / "repo"
    assert pkgtool("build", src, out, "--format", fmt, cwd=tmp_path).returncode == 0
    assert pkgtool("test-repo", out, repo, "--codename", "bookworm", cwd=tmp_path).returncode == 0
    return repo


@pytest.mark.slow
def test_lint_fails_for_a_package_that_installs_into_usr_local(tmp_path: Path) -> None:
    src = variant(
        tmp_path / "src",
        {
            "Makefile": replace(
                "\ninstall:\n",
                "\ninstall:\n\tinstall -D -m 0755 lockmaster-hello "
                "$(DESTDIR)/usr/local/bin/lockmaster-hello-local\n",
            ),
            # dh_usrlocal would refuse the build: the broken packager turned it off.
            "debian/rules": replace("\tdh $@\n", "\tdh $@\n\noverride_dh_usrlocal:\n"),
            "lockmaster-hello.spec": replace(
                "%{_bindir}/lockmaster-hello\n",
                "%{_bindir}/lockmaster-hello\n/usr/local/bin/lockmaster-hello-local\n",
            ),
        },
    )
    out = tmp_path / "out"
    assert pkgtool("build", src, out, cwd=tmp_path).returncode == 0
    proc = pkgtool("lint", out, cwd=tmp_path)
    assert proc.returncode == 1
    assert "E: lockmaster-hello: file-in-usr-local" in proc.stdout
    assert "E: dir-or-file-in-usr-local" in proc.stdout
    assert "lint found errors" in proc.stderr
    summary = next(line for line in proc.stdout.splitlines() if "lint summary" in line)
    assert "deb: 0 error(s)" not in summary and "rpm: 0 error(s)" not in summary


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["deb", "rpm"])
def test_failing_postinst_fails_the_install_naming_the_package(
    tmp_path: Path, fmt: str
) -> None:
    marker = "/lockmaster-hello-postinst-ran"
    src = variant(
        tmp_path / "src",
        {
            "debian/postinst": f"#!/bin/sh\nset -e\n#DEBHELPER#\ntouch {marker}\n"
            'echo "postinst: failing on purpose" >&2\nexit 1\n',
            "lockmaster-hello.spec": replace(
                "%files\n", f'%post\ntouch {marker}\necho "%%post: failing on purpose"\n'
                "exit 1\n\n%files\n",
            ),
        },
    )  # fmt: skip
    repo = build_and_publish(src, tmp_path, fmt)
    proc = pkgtool(
        "install-test", repo, "--format", fmt, "--work", tmp_path / "w", cwd=tmp_path
    )
    assert proc.returncode == 1
    assert "failing on purpose" in proc.stdout
    assert "install-test failed for 1 of 1 package(s): lockmaster-hello (install failed" in (
        proc.stderr
    )
    # The script ran chrooted in the isolated root (kept for inspection), not on the worker.
    roots = list((tmp_path / "w" / "roots").iterdir())
    assert len(roots) == 1 and (roots[0] / marker.lstrip("/")).exists()
    assert not Path(marker).exists()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["deb", "rpm"])
def test_files_left_behind_after_removal_fail_the_install_test(
    tmp_path: Path, fmt: str
) -> None:
    create = "mkdir -p /var/lib/lockmaster-hello && echo 1 > /var/lib/lockmaster-hello/state"
    src = variant(
        tmp_path / "src",
        {
            "debian/postinst": f"#!/bin/sh\nset -e\n{create}\n#DEBHELPER#\n",
            "lockmaster-hello.spec": replace("%files\n", f"%post\n{create}\n\n%files\n"),
        },
    )
    repo = build_and_publish(src, tmp_path, fmt)
    proc = pkgtool("install-test", repo, "--format", fmt, "--work", tmp_path / "w", cwd=tmp_path)
    assert proc.returncode == 1
    assert "the root is not clean after removal" in proc.stdout
    assert "left behind: /var/lib/lockmaster-hello/state" in proc.stdout
    assert "left behind: /var/lib/lockmaster-hello\n" in proc.stdout
    assert "lockmaster-hello (the root is not clean after removal" in proc.stderr
    assert not Path("/var/lib/lockmaster-hello").exists()


@pytest.mark.slow
def test_install_test_runs_every_package_one_at_a_time(tmp_path: Path) -> None:
    """Two binary packages from one source: each gets its own root; one fails, one passes."""
    src = variant(
        tmp_path / "src",
        {
            "debian/control": lambda text: text
            + "\nPackage: lockmaster-hello-broken\nArchitecture: all\n"
            "Depends: ${misc:Depends}\nDescription: broken companion of lockmaster-hello\n"
            " Its postinst fails, to test the install test.\n",
            "debian/lockmaster-hello-broken.postinst": "#!/bin/sh\nset -e\n#DEBHELPER#\nexit 7\n",
            # With two binary packages, dh installs into debian/tmp: say what goes where.
            "debian/lockmaster-hello.install": "usr/bin\nusr/share/man\n",
        },
    )  # fmt: skip
    out, repo = tmp_path / "out", tmp_path / "repo"
    assert pkgtool("build", src, out, "--format", "deb", cwd=tmp_path).returncode == 0
    assert pkgtool("test-repo", out, repo, "--codename", "bookworm", cwd=tmp_path).returncode == 0
    assert "rpm" not in json.loads((repo / "repo.json").read_text())
    proc = pkgtool("install-test", repo, "--format", "deb", "--smoke-dir", HELLO / "smoke",
                   "--work", tmp_path / "w", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1
    assert "ok     lockmaster-hello 1.0.0 (all): installed, smoke tested" in proc.stdout
    assert "FAILED lockmaster-hello-broken 1.0.0 (all):" in proc.stdout
    assert "failed for 1 of 2 package(s): lockmaster-hello-broken (install failed" in proc.stderr
    rpm_proc = pkgtool("install-test", repo, "--format", "rpm", "--work", tmp_path / "w2",
                       cwd=tmp_path)  # fmt: skip
    assert rpm_proc.returncode == 2
    assert "has no rpm repository" in rpm_proc.stderr
