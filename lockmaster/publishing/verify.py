"""Verification of a repository tree as a client would do it, before it goes live.

APT: gpgv checks InRelease and Release.gpg against only the published public key, and that
InRelease signs exactly the Release; every file the Release lists (and its by-hash copy) and
every .deb the Packages indices reference is checked against its size and hashes (readers.py,
on the directory); then a real `apt-get update` runs in an isolated tree (APT_CONFIG, its own
Dir, sources entry `signed-by` the key, no other trusted keys, any warning is an error) over
file:// or http://, and `apt-get download` fetches the newly added packages, checking them
against the index like an install would.

RPM: gpgv checks repodata/repomd.xml.asc; every metadata file repomd.xml lists is checked
(checksum, size, open-checksum); every package primary.xml lists is checked against its size
and checksum, and `rpmkeys --checksig` (with an isolated --dbpath holding only the key, and
`_pkgverify_level all` so that an unsigned package fails) checks each package's signature.

Package files hardlinked unchanged from the previous, already verified snapshot are size-checked
only (see BuildContext.trusted): a publish into a big repository does not rehash it all.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from lockmaster.publishing.errors import VerificationError
from lockmaster.publishing.model import AptRepoConfig
from lockmaster.publishing.readers import DirectorySource, scan_apt, scan_rpm
from lockmaster.publishing.signing import Keyring, gpgv, open_keyring
from lockmaster.publishing.tools import Heartbeat, Progress, run, scratch_dir

Trusted = Callable[[str, str | None], bool]


def _signatures(dist: Path, keyring: Keyring) -> list[str]:
    problems: list[str] = []
    with tempfile.TemporaryDirectory(dir=keyring.directory) as scratch:
        content = Path(scratch) / "content"
        problem = gpgv(keyring, dist / "InRelease", output=content)
        if problem:
            problems.append(f"{dist / 'InRelease'}: {problem}")
        elif content.read_bytes() != (dist / "Release").read_bytes():
            problems.append(f"{dist / 'InRelease'}: signs other content than Release")
    problem = gpgv(keyring, dist / "Release.gpg", dist / "Release")
    if problem:
        problems.append(f"{dist / 'Release.gpg'}: {problem}")
    return problems


def verify_apt_tree(tree: Path, public_key: Path, config: AptRepoConfig, *,
                    download: Sequence[tuple[str, str, str]] = (),
                    trusted: Trusted | None = None,
                    progress: Progress | None = None) -> list[str]:
    """Verify the APT repository in `tree`; VerificationError listing every problem. Returns
    the checks that passed. `download` (name, version, arch: the new packages) are fetched
    with `apt-get download` when `config.apt_get_check`."""
    beat = Heartbeat(progress)
    dist = tree / "dists" / config.codename
    problems: list[str] = []
    checks: list[str] = []
    with open_keyring(public_key) as keyring:
        missing = [name for name in ("InRelease", "Release.gpg", "Release")
                   if not (dist / name).is_file()]
        problems += [f"{dist / name}: missing" for name in missing]
        if not missing:
            problems += _signatures(dist, keyring)
            checks.append("gpgv: InRelease and Release.gpg signed by the key; InRelease signs "
                          "the Release")
        read = scan_apt(DirectorySource(tree, trusted), keyring, config.codename,
                        progress=beat.raw, named_indices=True)
        problems += read.problems
        checks.append(f"Release indices and {len(read.packages)} packages match their sizes "
                      "and hashes")
        if problems:
            raise VerificationError(f"the APT repository {tree} fails verification", problems)
        if config.apt_get_check:
            apt_get_check(tree.resolve().as_uri(), keyring, config.codename,
                          component=config.component, architectures=config.architectures,
                          download=download, progress=beat.raw)
            checks.append(f"apt-get update (signed-by the key only) and apt-get download of "
                          f"{len(download)} new packages")
    return checks


def verify_rpm_tree(tree: Path, public_key: Path, *, trusted: Trusted | None = None,
                    progress: Progress | None = None) -> list[str]:
    """Verify the RPM repository in `tree`; VerificationError listing every problem. Returns
    the checks that passed."""
    with open_keyring(public_key) as keyring:
        read = scan_rpm(DirectorySource(tree, trusted), keyring, check_signatures=True,
                        progress=progress)
    if read.problems:
        raise VerificationError(f"the RPM repository {tree} fails verification", read.problems)
    return ["gpgv: repodata/repomd.xml.asc signed by the key",
            f"repomd.xml metadata and {len(read.packages)} packages match their checksums",
            "rpmkeys --checksig (isolated rpmdb with only the key) of every package not "
            "verified in the previous snapshot"]


@contextlib.contextmanager
def _keyring_of(key: Path | Keyring) -> Iterator[Keyring]:
    if isinstance(key, Keyring):
        yield key
    else:
        with open_keyring(key) as keyring:
            yield keyring


def apt_get_check(url: str, public_key: Path | Keyring, codename: str, *,
                  component: str = "main", architectures: Sequence[str] = ("amd64",),
                  download: Sequence[tuple[str, str, str]] = (),
                  progress: Progress | None = None, keep_in: Path | None = None) -> None:
    """`apt-get update` against `url` (file:// or http://) in an isolated apt tree that trusts
    only `public_key`, then `apt-get download` of `download` (name, version, arch), copied into
    `keep_in` if given. VerificationError with apt's output if apt reports any error or
    warning."""
    arches = [a for a in architectures if a != "source"] or ["amd64"]
    with _keyring_of(public_key) as keyring, scratch_dir("lm-apt-") as root:
        for sub in ("etc/apt/apt.conf.d", "etc/apt/sources.list.d", "etc/apt/preferences.d",
                    "etc/apt/trusted.gpg.d", "var/lib/apt/lists/partial",
                    "var/cache/apt/archives/partial", "var/lib/dpkg", "var/log/apt", "dl"):
            (root / sub).mkdir(parents=True)
        (root / "var/lib/dpkg/status").touch()
        (root / "etc/apt/sources.list").write_text(
            f"deb [signed-by={keyring.path} arch={','.join(arches)}] {url} {codename} "
            f"{component}\n")
        arch_list = " ".join(f'"{a}";' for a in arches)
        (root / "apt.conf").write_text("\n".join([
            f'Dir "{root}/";',
            f'Dir::State::status "{root}/var/lib/dpkg/status";',
            f'Dir::Etc::trusted "{root}/etc/apt/trusted.gpg";',
            f'Dir::Etc::trustedparts "{root}/etc/apt/trusted.gpg.d/";',
            f'APT::Architecture "{arches[0]}";',
            f"APT::Architectures {{ {arch_list} }};",
            'APT::Sandbox::User "root";',
            'Acquire::Languages "none";',
            'Acquire::http::Proxy "DIRECT";',
            'Acquire::Retries "0";',
            "",
        ]))
        env = {"APT_CONFIG": str(root / "apt.conf")}
        update = run(["apt-get", "-q", "--error-on=any", "update"], what="apt-get update",
                     progress=progress, env=env, ok=range(0, 256))
        bad = [line for line in (update.stdout + update.stderr).splitlines()
               if line.startswith(("E:", "W:", "Err:"))]
        if update.returncode != 0 or bad:
            raise VerificationError(f"apt-get update against {url} fails",
                                    bad or [update.stderr.strip() or update.stdout.strip()])
        if not download:
            return
        wanted = [f"{n}={v}" if a in ("all", arches[0]) else f"{n}:{a}={v}"
                  for n, v, a in download]
        fetched = run(["apt-get", "-q", "download", *wanted], what="apt-get download",
                      progress=progress, env=env, cwd=root / "dl", ok=range(0, 256))
        if fetched.returncode != 0:
            raise VerificationError(
                f"apt-get download from {url} fails",
                [line for line in fetched.stderr.splitlines() if line.strip()]
                or [fetched.stdout.strip()])
        debs = sorted((root / "dl").glob("*.deb"))
        if len(debs) != len(set(wanted)):
            raise VerificationError(f"apt-get download from {url} fetched {len(debs)} of "
                                    f"{len(set(wanted))} packages", wanted)
        if keep_in is not None:
            keep_in.mkdir(parents=True, exist_ok=True)
            for deb in debs:
                shutil.copy2(deb, keep_in / deb.name)
