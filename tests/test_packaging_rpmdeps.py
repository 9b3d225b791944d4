"""RPM BuildRequires resolved against configured RPM repositories (pkg_rpmdeps.py): real
rpmbuild, createrepo_c and dnf. The demo spec needs `make`; a repository providing it lets
the build go on, one without it fails the build naming it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKGTOOL = ROOT / "lockmaster" / "packaging" / "pkgtool.py"
HELLO = ROOT / "lockmaster" / "demo" / "packages" / "hello"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("rpmbuild", "createrepo_c", "dnf")),
    reason="rpmbuild, createrepo_c and dnf are installed by scripts/setup")

PROVIDER = """Name: lockmaster-fake-{name}
Version: 1.0
Release: 1
Summary: Provides {name} for the BuildRequires test
License: CC0-1.0
BuildArch: noarch
Provides: {name}

%description
Provides {name}.

%files

%changelog
* Sun Dec 06 2026 lockmaster tests <tests@lockmaster.example.org> - 1.0-1
- test
"""


def pkgtool(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, str(PKGTOOL), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    print(proc.stdout[-4000:], proc.stderr[-2000:])
    return proc


def rpm_repo(tmp: Path, provides: str) -> str:
    """An RPM repository (createrepo_c) with one package that provides `provides`."""
    src = tmp / f"provider-{provides}"
    src.mkdir()
    (src / f"lockmaster-fake-{provides}.spec").write_text(PROVIDER.format(name=provides))
    out = tmp / f"built-{provides}"
    assert pkgtool("build", src, out, "--format", "rpm", cwd=tmp).returncode == 0
    repo = tmp / f"repo-{provides}"
    repo.mkdir()
    for rpm in (out / "rpm").glob("*.noarch.rpm"):
        shutil.copy(rpm, repo)
    subprocess.run(["createrepo_c", "-q", str(repo)], check=True)
    return repo.as_uri()


def test_buildrequires_provided_by_the_repository_let_the_build_go_on(tmp_path: Path) -> None:
    repo = rpm_repo(tmp_path, "make")
    proc = pkgtool("build", HELLO, tmp_path / "out", "--format", "rpm", "--rpm-repo", repo,
                   cwd=tmp_path)
    assert proc.returncode == 0
    assert "BuildRequires resolved from the configured RPM repositories: make" in proc.stdout
    assert list((tmp_path / "out" / "rpm").glob("lockmaster-hello-1.0.0-1.noarch.rpm"))


def test_buildrequires_nothing_provides_fail_the_build_with_their_names(tmp_path: Path) -> None:
    repo = rpm_repo(tmp_path, "lockmaster-something-else")
    proc = pkgtool("build", HELLO, tmp_path / "out", "--format", "rpm", "--rpm-repo", repo,
                   cwd=tmp_path)
    assert proc.returncode == 1
    assert "BuildRequires not provided by the configured RPM repositories" in proc.stderr
    assert ": make." in proc.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_without_repositories_buildrequires_are_listed_as_unverified(tmp_path: Path) -> None:
    proc = pkgtool("build", HELLO, tmp_path / "out", "--format", "rpm", cwd=tmp_path)
    assert proc.returncode == 0
    assert "Unverified BuildRequires: make" in proc.stdout
