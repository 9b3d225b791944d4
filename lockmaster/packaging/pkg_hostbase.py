"""The host-made base of install roots when no distribution is configured: a small package
holding a directory skeleton and a few host programs (docs/packaging.md)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from pkg_common import UsageError, require_tools, run

# --------------------------------------------------------------------------------------------
# install-test: the isolated root


# Directories every root has, owned by the base package (as base-files/filesystem do).
SKELETON_DIRS = [
    "etc", "home", "mnt", "opt", "root", "run", "srv", "tmp",
    "usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/libexec", "usr/include",
    "usr/local/bin", "usr/local/lib", "usr/local/share",
    "usr/share", "usr/share/doc", "usr/share/info", "usr/share/licenses", "usr/share/locale",
    "usr/share/man", *(f"usr/share/man/man{i}" for i in range(1, 9)),
    "var/cache", "var/lib", "var/log", "var/spool", "var/tmp",
]  # fmt: skip
USRMERGE_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
# Host programs copied into the root (with their libraries): the minimal system that package
# scripts and smoke scripts can count on. `sh` is required; missing others are skipped.
TOOLBOX = [
    "sh", "cat", "cp", "ls", "mkdir", "rm", "rmdir", "mv", "ln", "chmod", "chown", "touch",
    "grep", "sed", "head", "tail", "sort", "uniq", "wc", "cut", "tr", "env", "id", "uname",
    "basename", "dirname", "readlink", "find", "xargs", "stat", "sleep", "date", "true",
    "false", "test", "expr", "printf", "echo",
]  # fmt: skip
DEB_TOOLBOX = [
    "dpkg", "dpkg-query", "dpkg-trigger", "dpkg-divert", "dpkg-statoverride",
    "dpkg-maintscript-helper", "update-alternatives",
]  # fmt: skip
BASE_NAME = "lockmaster-installroot-base"
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Paths in the root that belong to the package manager (databases, caches, logs) or are scratch.
IGNORED_COMMON = ["tmp", "var/tmp", "dev", "proc", "sys"]
IGNORED_DEB = [
    "var/lib/dpkg", "var/lib/apt", "var/cache/apt", "var/cache/debconf", "var/log/apt",
    "var/log/dpkg.log", "var/log/alternatives.log",
]  # fmt: skip
IGNORED_RPM = [
    "var/lib/rpm", "usr/lib/sysimage/rpm", "var/lib/dnf", "var/cache/dnf", "etc/dnf/modules.d",
    "var/log/dnf.log", "var/log/dnf.librepo.log", "var/log/dnf.rpm.log", "var/log/hawkey.log",
]  # fmt: skip


def library_deps(binary: Path) -> list[Path]:
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    libs = []
    for line in proc.stdout.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def stage_base(stage: Path, fmt: str) -> list[str]:
    """Lay out the base system (skeleton, usr-merge links, toolbox + libraries) in `stage`."""
    require_tools("ldd")
    for link, target in USRMERGE_LINKS.items():
        (stage / target).mkdir(parents=True, exist_ok=True)
        (stage / link).symlink_to(target)
    for d in SKELETON_DIRS:
        (stage / d).mkdir(parents=True, exist_ok=True)
    (stage / "tmp").chmod(0o1777)
    (stage / "var/tmp").chmod(0o1777)
    (stage / "root").chmod(0o700)
    (stage / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (stage / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    copied: list[str] = []
    tools = TOOLBOX + (DEB_TOOLBOX if fmt == "deb" else [])
    for tool in tools:
        found = shutil.which(tool)
        if found is None:
            if tool == "sh":
                raise UsageError("install-test: this node has no /bin/sh to put in the root")
            continue
        host = Path(found).resolve()
        dest = stage / "usr/bin" / tool
        if dest.exists():
            continue
        shutil.copy2(host, dest)
        copied.append(tool)
        for lib in library_deps(host):
            lib_dest = stage / str(lib).lstrip("/")
            if not lib_dest.exists():
                lib_dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(lib.resolve(), lib_dest)
    return copied


def build_base_deb(work: Path, arch: str) -> Path:
    """A .deb owning the root's skeleton and toolbox, so dpkg keeps them and sees conflicts."""
    stage = work / "base-deb"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    tools = stage_base(stage, "deb")
    (stage / "DEBIAN").mkdir()
    (stage / "DEBIAN/control").write_text(
        f"Package: {BASE_NAME}\nVersion: 1\nArchitecture: {arch}\n"
        "Maintainer: lockmaster pkgtool <pkgtool@lockmaster.invalid>\n"
        "Priority: required\nSection: admin\n"
        f"Description: minimal root for pkgtool install tests\n"
        f" Directory skeleton and host tools: {' '.join(tools)}.\n"
    )
    deb = work / f"{BASE_NAME}.deb"
    result = run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", stage, deb])
    if not result.ok:
        raise UsageError("install-test: could not build the base package for the root (above)")
    return deb


def build_base_rpm(work: Path) -> Path:
    """An RPM owning the root's skeleton and toolbox and providing /bin/sh (like `filesystem`
    and `bash` do), so packages with scriptlets or shell scripts can be installed."""
    require_tools("rpmbuild")
    base = work / "base-rpm"
    if base.exists():
        shutil.rmtree(base)
    stage = base / "stage"
    stage.mkdir(parents=True)
    tools = stage_base(stage, "rpm")
    files = []
    for dirpath, dirnames, filenames in os.walk(stage):
        rel = "/" + Path(dirpath).relative_to(stage).as_posix()
        if rel != "/":
            files.append(f"%dir {rel}")
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_dir():
                files.append(f"{rel.rstrip('/')}/{name}")
    spec = base / f"{BASE_NAME}.spec"
    spec.write_text(
        f"Name: {BASE_NAME}\nVersion: 1\nRelease: 1\n"
        "Summary: minimal root for pkgtool install tests\nLicense: NONE\n"
        "AutoReqProv: no\nProvides: /bin/sh\nProvides: /usr/bin/sh\n"
        f"%description\nDirectory skeleton and host tools: {' '.join(tools)}.\n"
        f"%install\ncp -a {shlex.quote(str(stage))}/. %{{buildroot}}/\n"
        "%files\n%defattr(-,root,root,-)\n" + "\n".join(files) + "\n"
    )
    topdir = base / "rpmbuild"
    (topdir / "tmp").mkdir(parents=True)
    result = run(
        [
            "rpmbuild", "-bb", "--nodeps",
            "--define", f"_topdir {topdir}",
            "--define", f"_dbpath {base / 'rpmdb'}",
            "--define", f"_tmppath {topdir / 'tmp'}",
            "--define", "__os_install_post %{nil}",
            "--define", "debug_package %{nil}",
            "--define", "_build_id_links none",
            spec,
        ]
    )  # fmt: skip
    rpms = sorted(topdir.glob("RPMS/*/*.rpm"))
    if not result.ok or not rpms:
        raise UsageError("install-test: could not build the base package for the root (above)")
    return rpms[0]
