"""The package managers of install-test roots: apt/dpkg and dnf/rpm, pointed at the test
repository."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

from pkg_common import (
    Result,
    StepFailed,
    UsageError,
    fetch,
    host_deb_arch,
    interesting,
    parse_deb822,
    require_tools,
)
from pkg_hostbase import (
    BASE_NAME,
    IGNORED_COMMON,
    IGNORED_DEB,
    IGNORED_RPM,
    build_base_deb,
    build_base_rpm,
)
from pkg_install import Installer, Package, RepoSource, compare_with_description
from pkg_repo import read_rpm_primary


class DebInstaller(Installer):
    fmt = "deb"
    ignored = IGNORED_COMMON + IGNORED_DEB

    def __init__(self, source: RepoSource, work: Path, prefix: list[str]) -> None:
        super().__init__(source, work, prefix)
        require_tools("apt-get", "dpkg", "dpkg-deb", "dpkg-query")
        self.arch = host_deb_arch()

    def packages(self) -> list[Package]:
        codename, component = self.info["codename"], self.info["component"]
        rel = f"dists/{codename}/{component}/binary-{self.arch}/Packages"
        url = f"{self.repo_url}/{rel}"
        try:
            text = fetch(url).decode("utf-8", "replace")
        except (OSError, urllib.error.URLError):
            try:
                text = gzip.decompress(fetch(url + ".gz")).decode("utf-8", "replace")
            except (OSError, urllib.error.URLError) as exc:
                raise UsageError(
                    f"install-test: no APT index for this node's architecture {self.arch} at "
                    f"{url} ({exc}); the repository was made for "
                    f"{', '.join(self.info.get('architectures', []))}"
                ) from exc
        pkgs = [
            Package(s["Package"], s["Version"], s.get("Architecture", ""))
            for s in parse_deb822(text)
            if "Package" in s and "Version" in s
        ]
        compare_with_description(self.info, pkgs, url)
        return sorted(pkgs, key=lambda p: (p.name, p.version))

    def apt_env(self, root: Path) -> dict[str, str]:
        conf = self.work / f"apt-{root.name}.conf"
        r = str(root)
        conf.write_text(
            # APT_CONFIG replaces the host's configuration: the host's apt.conf.d, sources and
            # state are never read; Dir points every other apt path into the root.
            f'Dir "{r}/";\n'
            f'Dir::State::status "{r}/var/lib/dpkg/status";\n'
            f'Dir::Etc::TrustedParts "{r}/etc/apt/trusted.gpg.d";\n'
            f'APT::Architecture "{self.arch}";\n'
            f'APT::Architectures {{ "{self.arch}"; }};\n'
            'APT::Sandbox::User "root";\n'
            'APT::Install-Recommends "false";\n'
            'APT::Install-Suggests "false";\n'
            'APT::Get::Assume-Yes "true";\n'
            'Acquire::Languages "none";\n'
            'Acquire::Retries "0";\n'
            'DPkg::Use-Pty "false";\n'
            # dpkg --root: unpack into the root and chroot into it to run maintainer scripts.
            f'DPkg::Options {{ "--root={r}"; "--log={r}/var/log/dpkg.log"; '
            '"--force-unsafe-io"; };\n'
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "LANG", "LC_ALL", "TMPDIR") or k.lower().endswith("_proxy")
        }
        env.update(
            APT_CONFIG=str(conf),
            DEBIAN_FRONTEND="noninteractive",
            DEBCONF_NONINTERACTIVE_SEEN="true",
        )
        return env

    def prepare(self, root: Path) -> None:
        if self.base_pkg is None:
            self.base_pkg = build_base_deb(self.work, self.arch)
        for d in (
            "var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers",
            "var/lib/apt/lists/partial", "var/cache/apt/archives/partial",
            "etc/apt/sources.list.d", "etc/apt/apt.conf.d", "etc/apt/preferences.d",
            "etc/apt/trusted.gpg.d", "var/log/apt",
        ):  # fmt: skip
            (root / d).mkdir(parents=True, exist_ok=True)
        for f in ("status", "available"):
            (root / "var/lib/dpkg" / f).touch()
        (root / "var/lib/dpkg/arch").write_text(self.arch + "\n")
        # --log too: dpkg's log path is not relative to --root.
        result = self.sh(
            ["dpkg", f"--root={root}", f"--log={root}/var/log/dpkg.log", "--force-unsafe-io",
             "--install", self.base_pkg]
        )  # fmt: skip
        if not result.ok:
            raise UsageError(f"install-test: could not install the base into {root} (above)")
        (root / "etc/apt/sources.list").write_text(
            "# lockmaster per-change test repository: the only package source of this root\n"
            f"deb [trusted=yes] {self.repo_url} {self.info['codename']} "
            f"{self.info['component']}\n"
        )
        update = self.sh(["apt-get", "update"], env=self.apt_env(root))
        if not update.ok or re.search(r"^(E|W): ", update.output, re.M):
            raise StepFailed(f"apt-get update failed for the test repository {self.repo_url}")

    def status(self, root: Path, name: str) -> str:
        proc = subprocess.run(
            ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${db:Status-Abbrev}",
             name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return proc.stdout.strip() if proc.returncode == 0 else "not-installed"

    def install(self, root: Path, pkg: Package) -> list[str]:
        result = self.sh(
            ["apt-get", "install", f"{pkg.name}={pkg.version}"], env=self.apt_env(root)
        )
        status = self.status(root, pkg.name)
        problems = []
        if not result.ok or status != "ii":
            why = interesting(
                result.output,
                [r"^E: ", r"dpkg: error", r"returned error exit status", r"trying to overwrite",
                 r"[Cc]onflict", r"Depends:", r"unmet"],
            )  # fmt: skip
            problems.append(
                f"install failed (apt-get exit {result.returncode}, dpkg status {status!r})"
                + ("".join(f"\n      {w}" for w in why))
            )
        return problems

    def remove(self, root: Path, pkg: Package) -> list[str]:
        result = self.sh(
            ["apt-get", "purge", "--autoremove", pkg.name], env=self.apt_env(root)
        )
        status = self.status(root, pkg.name)
        problems = []
        if not result.ok or status not in ("not-installed", "un", "pn"):
            why = interesting(result.output, [r"^E: ", r"dpkg: error", r"returned error"])
            problems.append(
                f"removal failed (apt-get purge exit {result.returncode}, dpkg status "
                f"{status!r})" + "".join(f"\n      {w}" for w in why)
            )
        return problems

    def installed_others(self, root: Path) -> list[str]:
        proc = subprocess.run(
            ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
             "-f=${Package} ${Version} ${db:Status-Abbrev}\n"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        left = []
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] != BASE_NAME and parts[2] not in ("un", "pn"):
                left.append(f"{parts[0]} {parts[1]} ({parts[2]})")
        return left


class RpmInstaller(Installer):
    fmt = "rpm"
    ignored = IGNORED_COMMON + IGNORED_RPM

    def __init__(self, source: RepoSource, work: Path, prefix: list[str]) -> None:
        super().__init__(source, work, prefix)
        require_tools("dnf", "rpm")
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME") or k.lower().endswith("_proxy")
        }
        self.env["LANG"] = self.env.get("LANG", "C.UTF-8")
        dbpath = subprocess.run(
            ["rpm", "--eval", "%{_dbpath}"], capture_output=True, text=True, env=self.env,
            check=False,
        ).stdout.strip()  # fmt: skip
        # Debian's rpm keeps its database in ~/.rpmdb: inside the root, that is ROOT/~/.rpmdb.
        if dbpath.startswith("/"):
            self.ignored = [*self.ignored, dbpath.strip("/")]
        self.reposdir = work / "no-system-repos"
        self.reposdir.mkdir(parents=True, exist_ok=True)
        self.conf = work / "dnf.conf"
        self.conf.write_text(
            "[main]\n"
            f"reposdir={self.reposdir}\n"
            "gpgcheck=0\nrepo_gpgcheck=0\nlocalpkg_gpgcheck=0\n"
            "install_weak_deps=0\nkeepcache=0\nplugins=0\nmetadata_expire=0\n"
            "clean_requirements_on_remove=1\nbest=1\nskip_if_unavailable=0\n"
            "protected_packages=\n"
            "\n[lockmaster-test]\n"
            "name=lockmaster per-change test repository\n"
            f"baseurl={self.repo_url}\n"
            "enabled=1\ngpgcheck=0\nrepo_gpgcheck=0\n"
        )

    def dnf(self, root: Path, *args: str) -> Result:
        return self.sh(
            ["dnf", "-y", "-c", self.conf, f"--installroot={root}", "--releasever=lockmaster",
             f"--setopt=reposdir={self.reposdir}", "--noplugins", "--disablerepo=*",
             "--enablerepo=lockmaster-test", *args],
            env=self.env,
        )  # fmt: skip

    def packages(self) -> list[Package]:
        try:
            rows = read_rpm_primary(fetch, self.repo_url)
        except (OSError, urllib.error.URLError, ET.ParseError) as exc:
            raise UsageError(
                f"install-test: cannot read RPM metadata at {self.repo_url}/repodata ({exc})"
            ) from exc
        pkgs = [Package(r["name"], r["version"], r["arch"]) for r in rows]
        compare_with_description(self.info, pkgs, f"{self.repo_url}/repodata")
        return sorted(pkgs, key=lambda p: (p.name, p.version))

    def prepare(self, root: Path) -> None:
        if self.base_pkg is None:
            self.base_pkg = build_base_rpm(self.work)
        result = self.sh(["rpm", "--root", root, "--install", self.base_pkg], env=self.env)
        if not result.ok:
            raise UsageError(f"install-test: could not install the base into {root} (above)")
        (root / "etc/dnf/modules.d").mkdir(parents=True)  # dnf's module state, made on install
        cache = self.dnf(root, "makecache")
        if not cache.ok:
            raise StepFailed(f"dnf cannot read the test repository {self.repo_url}")

    def nevra(self, pkg: Package) -> str:
        return f"{pkg.name}-{pkg.version}.{pkg.arch}"

    def is_installed(self, root: Path, pkg: Package) -> bool:
        proc = subprocess.run(
            ["rpm", "--root", str(root), "-q", self.nevra(pkg)],
            capture_output=True, text=True, env=self.env, check=False,
        )  # fmt: skip
        return proc.returncode == 0

    SCRIPTLET_FAILURE = (r"scriptlet failed", r"Error in \S+ scriptlet", r"scriptlet failure")

    def install(self, root: Path, pkg: Package) -> list[str]:
        result = self.dnf(root, "install", self.nevra(pkg))
        installed = self.is_installed(root, pkg)
        scriptlet = interesting(result.output, self.SCRIPTLET_FAILURE)
        if result.ok and installed and not scriptlet:
            return []
        why = scriptlet or interesting(
            result.output,
            [r"^Error", r"Problem", r"nothing provides", r"conflicts", r"^\s+- ", r"error:"],
        )
        return [
            f"install failed (dnf exit {result.returncode}, installed: {installed})"
            + "".join(f"\n      {w}" for w in why)
        ]

    def remove(self, root: Path, pkg: Package) -> list[str]:
        result = self.dnf(root, "remove", self.nevra(pkg))
        installed = self.is_installed(root, pkg)
        scriptlet = interesting(result.output, self.SCRIPTLET_FAILURE)
        if result.ok and not installed and not scriptlet:
            return []
        why = scriptlet or interesting(result.output, [r"^Error", r"error:"])
        return [
            f"removal failed (dnf exit {result.returncode}, still installed: {installed})"
            + "".join(f"\n      {w}" for w in why)
        ]

    def installed_others(self, root: Path) -> list[str]:
        proc = subprocess.run(
            ["rpm", "--root", str(root), "-qa", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\n"],
            capture_output=True, text=True, env=self.env, check=False,
        )  # fmt: skip
        return [
            line for line in proc.stdout.split() if line and not line.startswith(BASE_NAME + "-")
        ]
