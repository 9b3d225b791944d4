"""pkgtool in clean roots of the target distribution (issue 13): builds whose build dependencies
apt resolves in a fresh `buildd` root, and piuparts-style install tests in fresh `minbase` roots
whose sources are the distribution plus the change's test repositories.

Everything is real: mmdebstrap, apt, dpkg-buildpackage, debhelper, gcc, reprepro. The
distribution is the tests' local repository of real Debian packages (tests/distribution.py),
served on loopback; the prepared roots are kept between runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from tests import distribution

ROOT = Path(__file__).resolve().parent.parent
PKGTOOL = ROOT / "lockmaster" / "packaging" / "pkgtool.py"

pytestmark = [
    pytest.mark.skipif(not distribution.available(), reason=distribution.missing_reason()),
    pytest.mark.skipif(os.geteuid() != 0, reason="clean roots need root (chroot, mounts)"),
]


def pkgtool(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, str(PKGTOOL), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=900)
    print(f"$ pkgtool.py {' '.join(map(str, args))}  -> {proc.returncode}")
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    return proc


def dist_args() -> list[str]:
    url, _ = distribution.local_distribution()
    return ["--distribution", url, "--codename", distribution.CODENAME,
            "--roots", str(distribution.ROOTS), *BUILD_INCLUDE]


# As lockmaster's jobs run it (packaging.roots.build-include): the same prepared build root.
BUILD_INCLUDE = ["--build-include", "debhelper"]


def source_package(tmp: Path, name: str, *, version: str = "1.0", build_depends: str = "",
                   binaries: list[dict[str, str]], rules_extra: str = "",
                   files: dict[str, str] | None = None) -> Path:
    """A fully unpacked Debian source tree (native format). Each binary: name, arch,
    depends, install (debian/<name>.install lines), and maintainer scripts by name."""
    src = tmp / name
    deb = src / "debian"
    (deb / "source").mkdir(parents=True)
    (deb / "source" / "format").write_text("3.0 (native)\n")
    bd = "debhelper-compat (= 13)" + (f", {build_depends}" if build_depends else "")
    stanzas = [textwrap.dedent(f"""\
        Source: {name}
        Section: misc
        Priority: optional
        Maintainer: lockmaster tests <tests@lockmaster.example.org>
        Build-Depends: {bd}
        Standards-Version: 4.6.2
        Rules-Requires-Root: no
        """)]
    for b in binaries:
        depends = ", ".join(x for x in ("${misc:Depends}", "${shlibs:Depends}",
                                        b.get("depends", "")) if x)
        stanzas.append(textwrap.dedent(f"""\
            Package: {b['name']}
            Architecture: {b.get('arch', 'all')}
            Depends: {depends}
            Description: lockmaster test package {b['name']}
             A package made by lockmaster's tests.
            """))
        if "install" in b:
            (deb / f"{b['name']}.install").write_text(b["install"] + "\n")
        for script in ("postinst", "postrm", "prerm"):
            if script in b:
                (deb / f"{b['name']}.{script}").write_text(b[script])
    (deb / "control").write_text("\n".join(stanzas))
    (deb / "changelog").write_text(
        f"{name} ({version}) unstable; urgency=medium\n\n  * Test package.\n\n"
        " -- lockmaster tests <tests@lockmaster.example.org>  Sun, 06 Dec 2026 12:00:00 +0000\n")
    (deb / "copyright").write_text("Format: https://www.debian.org/doc/packaging-manuals/"
                                   "copyright-format/1.0/\n\nFiles: *\nCopyright: none\n"
                                   "License: CC0-1.0\n")
    (deb / "rules").write_text("#!/usr/bin/make -f\n%:\n\tdh $@\n" + rules_extra)
    (deb / "rules").chmod(0o755)
    for rel, text in (files or {}).items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    return src


def build_and_repo(tmp: Path, src: Path, *extra: str) -> tuple[Path, Path]:
    out = tmp / f"out-{src.name}"
    proc = pkgtool("build", src, out, "--format", "deb", *dist_args(), *extra, cwd=tmp)
    assert proc.returncode == 0
    repo = tmp / f"repo-{src.name}"
    assert pkgtool("test-repo", out, repo, "--codename", distribution.CODENAME,
                   cwd=tmp).returncode == 0
    return out, repo


HELLO_C = """#include <stdio.h>
int main(void) { puts("hello from C"); return 0; }
"""


def test_a_c_program_depending_on_libc6_builds_and_installs(tmp_path: Path) -> None:
    """The issue's case: a package depending on libc6 (as nearly every real one does) installs,
    from the distribution, in a minimal root; the build root got its build dependencies (gcc
    from build-essential, debhelper) from the distribution, not from this node."""
    src = source_package(tmp_path, "lockmaster-hello-c", binaries=[
        {"name": "lockmaster-hello-c", "arch": "any", "install": "hello-c usr/bin"}],
        files={"Makefile": "hello-c: hello.c\n\t$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $<\n"
                           "clean:\n\trm -f hello-c\n", "hello.c": HELLO_C})
    out, repo = build_and_repo(tmp_path, src)
    [deb] = (out / "deb").glob("lockmaster-hello-c_*.deb")
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True,
                             text=True, check=True).stdout
    assert "libc6" in depends
    lock = (out / "build-deb.lock").read_text()
    assert "\ndebhelper\t" in "\n" + lock and "\ngcc-12\t" in "\n" + lock
    smoke = tmp_path / "smoke"
    smoke.mkdir()
    (smoke / "lockmaster-hello-c.sh").write_text(
        "#!/bin/sh\nset -e\nhello-c | grep 'hello from C'\n")
    work = tmp_path / "work"
    proc = pkgtool("install-test", repo, "--format", "deb", "--smoke-dir", smoke,
                   "--work", work, *dist_args(), cwd=tmp_path)
    assert proc.returncode == 0
    assert "ok     lockmaster-hello-c 1.0" in proc.stdout
    assert "smoke tested" in proc.stdout and "nothing left behind" in proc.stdout
    # The root's lock file of the install: libc6 from the distribution, with the package.
    test_lock = (work / "locks" / f"lockmaster-hello-c_{deb.name.split('_')[2][:-4]}.lock")
    assert "lockmaster-hello-c\t1.0" in test_lock.read_text()
    assert "\nlibc6\t" in "\n" + test_lock.read_text()


def test_a_missing_build_dependency_fails_the_build_with_its_name(tmp_path: Path) -> None:
    src = source_package(tmp_path, "lockmaster-needs-missing",
                         build_depends="lockmaster-no-such-package (>= 2)",
                         binaries=[{"name": "lockmaster-needs-missing"}])
    proc = pkgtool("build", src, tmp_path / "out", "--format", "deb", *dist_args(),
                   cwd=tmp_path)
    assert proc.returncode == 1
    assert "build dependencies of" in proc.stderr
    assert "lockmaster-no-such-package" in proc.stderr
    assert "not available from the distribution" in proc.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_runtime_dependency_comes_from_the_change_and_leftovers_fail(
        tmp_path: Path) -> None:
    """One change, one build, each package tested alone in its own root. It builds its own
    help2man (the distribution has 1.49.3) and a package depending on it: the install test
    takes the change's help2man, not the distribution's newer one, and a dependency on another
    package of the same change resolves from the test repository. Its lockmaster-litter
    leaves /var/lib/lockmaster-litter/state behind after removal: that package fails, alone."""
    src = source_package(tmp_path, "lockmaster-pair", binaries=[
        {"name": "lockmaster-pair", "depends": "lockmaster-pair-data (= ${binary:Version}), "
                                               "help2man"},
        {"name": "lockmaster-pair-data", "install": "data.txt usr/share/lockmaster-pair"},
        {"name": "help2man"},
        {"name": "lockmaster-litter",
         "postinst": "#!/bin/sh\nset -e\nmkdir -p /var/lib/lockmaster-litter\n"
                     "echo x > /var/lib/lockmaster-litter/state\n#DEBHELPER#\n"},
    ], files={"data.txt": "data\n"})
    _, repo = build_and_repo(tmp_path, src)
    proc = pkgtool("install-test", repo, "--format", "deb", "--work", tmp_path / "w",
                   *dist_args(), cwd=tmp_path)
    assert proc.returncode == 1
    installed = proc.stdout.split("installed with lockmaster-pair 1.0 (all)")[1].split("---")[0]
    assert "+ help2man:all 1.0" in installed
    assert "+ lockmaster-pair-data:all 1.0" in installed
    assert "ok     lockmaster-pair 1.0 (all): installed, removed, nothing left behind" \
        in proc.stdout
    assert "ok     help2man 1.0 (all)" in proc.stdout
    assert "FAILED lockmaster-litter 1.0" in proc.stdout
    assert "var/lib/lockmaster-litter/state" in proc.stdout
    assert "install-test failed for 1 of 4 package(s): lockmaster-litter" in proc.stderr


def test_a_build_dependency_built_by_the_change_ahead_comes_from_its_test_repo(
        tmp_path: Path) -> None:
    """Zuul's buildset registry, for packages: the change ahead built lockmaster-ahead-dev;
    a package build-depending on it builds only with that change's test repository."""
    ahead = source_package(tmp_path, "lockmaster-ahead", version="2.0", binaries=[
        {"name": "lockmaster-ahead-dev", "install": "ahead.h usr/include"}],
        files={"ahead.h": "#define AHEAD 2\n"})
    _, ahead_repo = build_and_repo(tmp_path, ahead)
    behind = source_package(tmp_path, "lockmaster-behind",
                            build_depends="lockmaster-ahead-dev (>= 2.0)",
                            binaries=[{"name": "lockmaster-behind"}],
                            rules_extra="override_dh_auto_build:\n"
                                        "\ttest -f /usr/include/ahead.h\n")
    alone = pkgtool("build", behind, tmp_path / "alone", "--format", "deb", *dist_args(),
                    cwd=tmp_path)
    assert alone.returncode == 1
    assert "lockmaster-ahead-dev" in alone.stderr
    with distribution.serve(ahead_repo) as (url, _):
        out = tmp_path / "with-ahead"
        proc = pkgtool("build", behind, out, "--format", "deb", "--extra-repo", url,
                       *dist_args(), cwd=tmp_path)
    assert proc.returncode == 0
    assert "lockmaster-ahead-dev\t2.0\tall" in (out / "build-deb.lock").read_text()


def test_the_lock_file_says_what_changed_since_the_last_build(tmp_path: Path) -> None:
    # A source name of its own: the node's record of its last build is this test's alone.
    name = f"lockmaster-locked-{uuid.uuid4().hex[:8]}"
    src = source_package(tmp_path, name, binaries=[{"name": name}])
    last = distribution.ROOTS / "last-builds" / f"{name}.lock"
    try:
        first = pkgtool("build", src, tmp_path / "one", "--format", "deb", *dist_args(),
                        cwd=tmp_path)
        assert first.returncode == 0
        assert "changed since the last build" not in first.stdout
        lock = (tmp_path / "one" / "build-deb.lock").read_text()
        assert last.read_text() == lock  # the node's record of this source's last build
        last.write_text(lock.replace("\ndebhelper\t", "\nx\t"))  # as if debhelper changed
        second = pkgtool("build", src, tmp_path / "two", "--format", "deb", *dist_args(),
                         cwd=tmp_path)
        assert f"changed since the last build of {name} on this node: 2" in second.stdout
        assert "+ debhelper:all" in second.stdout and "- x:all" in second.stdout
    finally:
        last.unlink(missing_ok=True)
    diff = pkgtool("lock-diff", tmp_path / "one" / "build-deb.lock",
                   tmp_path / "two" / "build-deb.lock", cwd=tmp_path)
    assert diff.returncode == 0 and "no differences" in diff.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--distribution", "ftp://x/debian", "--codename", "bookworm"], "not an http(s) URL"),
        (["--distribution", "http://127.0.0.1:9/debian"], "needs --codename"),
        (["--extra-repo", "http://127.0.0.1:9/r"], "--extra-repo needs --distribution"),
        (["--distribution", "http://127.0.0.1:9/d", "--codename", "bookworm", "--keyring",
          "/nonexistent.gpg"], "--keyring"),
    ],
)  # fmt: skip
def test_bad_distribution_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    src = source_package(tmp_path, "lockmaster-bad", binaries=[{"name": "lockmaster-bad"}])
    proc = pkgtool("build", src, tmp_path / "out", "--format", "deb", *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_second_build_and_install_test_download_nothing_through_the_cache(
        tmp_path: Path) -> None:
    """Seed 000's package cache: the distribution reaches the roots through a real
    apt-cacher-ng; the second build and install test of a package are served from the cache
    alone (its transfer log, and the distribution server's own request log, agree)."""
    from lockmaster.packaging.cache_server import PackageCache
    from tests.test_package_cache import low_port

    url, upstream = distribution.local_distribution()
    port = int(url.rsplit(":", 1)[1])
    # help2man is not in the prepared build root: the first build fetches it (and its
    # dependencies) through the cache, the second must not.
    src = source_package(tmp_path, "lockmaster-cached", build_depends="help2man",
                         binaries=[{"name": "lockmaster-cached"}])
    with PackageCache(tmp_path / "cache", "127.0.0.1", low_port(), [port]) as cache:
        via_cache = f"{cache.url}/127.0.0.1:{port}"
        args = ["--distribution", via_cache, "--codename", distribution.CODENAME,
                "--roots", str(distribution.ROOTS), *BUILD_INCLUDE]

        def build_and_test(n: int) -> tuple[int, list[str]]:
            mark, seen = cache.stats().end, len(upstream)
            out = tmp_path / f"out{n}"
            assert pkgtool("build", src, out, "--format", "deb", *args,
                           cwd=tmp_path).returncode == 0
            repo = tmp_path / f"repo{n}"
            assert pkgtool("test-repo", out, repo, "--codename", distribution.CODENAME,
                           cwd=tmp_path).returncode == 0
            assert pkgtool("install-test", repo, "--format", "deb", *args,
                           cwd=tmp_path).returncode == 0
            stats = cache.stats(since=mark)
            debs = [p for p in upstream[seen:] if p.endswith(".deb")]
            print(f"round {n}: {stats.to_json()}; upstream .debs: {debs}")
            return stats.hits, [*stats.packages_fetched, *debs]

        _, first_fetched = build_and_test(1)
        second_hits, second_fetched = build_and_test(2)
    assert first_fetched, "the first build fetched its build dependencies through the cache"
    assert second_fetched == []
    assert second_hits > 0


@pytest.mark.slow
def test_gnu_hello_from_debian_builds_and_installs_through_the_cache(tmp_path: Path) -> None:
    """A real Debian source package (GNU hello 2.10-3 from bookworm, fully unpacked): its
    real build dependencies (debhelper-compat 13, help2man, texinfo) come from the distribution
    through apt-cacher-ng, and its real runtime dependency (libc6) in the install root too."""
    from lockmaster.packaging.cache_server import PackageCache
    from tests.test_package_cache import low_port

    url, _ = distribution.local_distribution()
    port = int(url.rsplit(":", 1)[1])
    src = distribution.hello_source(tmp_path / "hello")
    assert (src / "debian" / "control").is_file() and not list(tmp_path.glob("*.orig.tar*"))
    with PackageCache(tmp_path / "cache", "127.0.0.1", low_port(), [port]) as cache:
        args = ["--distribution", f"{cache.url}/127.0.0.1:{port}", "--codename",
                distribution.CODENAME, "--roots", str(distribution.ROOTS), *BUILD_INCLUDE]
        out = tmp_path / "out"
        assert pkgtool("build", src, out, "--format", "deb", *args, cwd=tmp_path).returncode == 0
        lock = (out / "build-deb.lock").read_text()
        for dep in ("help2man", "texinfo", "debhelper"):
            assert f"\n{dep}\t" in "\n" + lock
        assert pkgtool("lint", out, cwd=tmp_path).returncode == 0
        repo = tmp_path / "repo"
        assert pkgtool("test-repo", out, repo, "--codename", distribution.CODENAME,
                       cwd=tmp_path).returncode == 0
        smoke = tmp_path / "smoke"
        smoke.mkdir()
        (smoke / "hello.sh").write_text("#!/bin/sh\nset -e\nhello | grep 'Hello, world!'\n")
        proc = pkgtool("install-test", repo, "--format", "deb", "--smoke-dir", smoke, *args,
                       cwd=tmp_path)
        assert proc.returncode == 0
        assert "ok     hello 2.10-3 (amd64): installed, smoke tested, removed, nothing left " \
            "behind" in proc.stdout
        stats = cache.stats()
    assert stats.requests > 0 and stats.misses > 0  # the build dependencies came through it
