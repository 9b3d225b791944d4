"""Signing with GnuPG, and the isolated keyrings verification uses.

- APT: `Release` -> `Release.gpg` (detached, armored) and `InRelease` (clearsigned).
- RPM: each package with rpmsign (macro `__gpg` = /usr/bin/gpg: Debian's default points at
  gpg2) before createrepo_c reads it; `repodata/repomd.xml` -> `repomd.xml.asc` after
  createrepo_c's last run.
Signatures are written under a temporary name and renamed, so a rerun after a crash never finds
half a signature. Verification never touches a user's keyring: `Keyring` holds only the given
public key, in a private temporary directory.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockmaster.publishing.errors import InvalidInput
from lockmaster.publishing.model import SigningKey
from lockmaster.publishing.tools import Progress, run

GPG = "/usr/bin/gpg"
# gpg-agent's sockets are made in the GnuPG home, and a UNIX socket path holds at most 107
# bytes; gpg puts them elsewhere only when /run/user/<uid> exists (not for root in a
# container). A deeper home fails with "No agent running": it is used through a short link.
SOCKET_PATH_MAX = 107
LONGEST_SOCKET = "/S.gpg-agent.browser"
ARMOR_BEGIN = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"


def _gpg_command(key: SigningKey) -> list[str]:
    command = [GPG, "--homedir", str(key.gnupghome), "--batch", "--yes", "--no-tty",
               "--pinentry-mode", "loopback"]
    if key.passphrase_file is not None:
        command += ["--passphrase-file", str(key.passphrase_file)]
    return [*command, "--local-user", key.fingerprint, "--digest-algo", "SHA256"]


def _hint(key: SigningKey) -> str:
    return (f"check that {key.gnupghome} holds the secret key {key.fingerprint} "
            f"(`gpg --homedir {key.gnupghome} --list-secret-keys`) and that its passphrase "
            "file, if any, is readable")


def check_key(key: SigningKey, progress: Progress | None = None) -> None:
    """The secret key is usable and the public key file is its public key."""
    if not key.public_key.is_file():
        raise InvalidInput(f"signing key: public key file {key.public_key} does not exist; "
                           f"export it with `gpg --armor --export {key.fingerprint}`")
    found = run([GPG, "--homedir", str(key.gnupghome), "--batch", "--with-colons",
                 "--list-secret-keys", key.fingerprint], what="gpg --list-secret-keys",
                progress=progress, hint=_hint(key))
    if key.fingerprint.upper() not in found.stdout.upper():
        raise InvalidInput(f"signing key {key.fingerprint} is not a secret key in "
                           f"{key.gnupghome}: {_hint(key)}")
    with open_keyring(key.public_key) as keyring:
        if key.fingerprint.upper() not in keyring.fingerprints:
            raise InvalidInput(
                f"signing key: {key.public_key} does not hold the public key of "
                f"{key.fingerprint} (it holds {', '.join(keyring.fingerprints) or 'nothing'}); "
                f"export it again with `gpg --armor --export {key.fingerprint}`")


def _signed_to(target: Path, mode: list[str], source: Path, key: SigningKey,
               progress: Progress | None, what: str) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    run([*_gpg_command(key), *mode, "--output", str(tmp), str(source)],
        what=what, progress=progress, hint=_hint(key))
    os.replace(tmp, target)


def usable_home(home: Path) -> Path:
    """`home`, or a short symbolic link to it in the temporary directory when gpg-agent's
    sockets would not fit under it (see SOCKET_PATH_MAX)."""
    if len(os.fsencode(str(home) + LONGEST_SOCKET)) <= SOCKET_PATH_MAX:
        return home
    digest = hashlib.sha256(os.fsencode(str(home))).hexdigest()[:16]
    link = Path(tempfile.gettempdir()) / f"lockmaster-gnupg-{digest}"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)  # (a link to nothing is no directory)
    with contextlib.suppress(FileExistsError):
        link.symlink_to(home, target_is_directory=True)
    if not link.is_symlink() or os.readlink(link) != str(home):
        raise InvalidInput(f"{link} exists and is not a link to the GnuPG home {home}: remove "
                           "it, or configure a GnuPG home with a shorter path")
    return link


def sign_release(release: Path, key: SigningKey, progress: Progress | None = None) -> None:
    """Write InRelease (clearsigned) and Release.gpg (detached, armored) next to `release`."""
    _signed_to(release.with_name("Release.gpg"), ["--armor", "--detach-sign"], release,
               key, progress, "gpg: sign Release (Release.gpg)")
    _signed_to(release.with_name("InRelease"), ["--clearsign"], release, key, progress,
               "gpg: sign Release (InRelease)")


def sign_detached(path: Path, key: SigningKey, progress: Progress | None = None) -> Path:
    """`path` -> `path.asc`, a detached ASCII-armored signature (e.g. repodata/repomd.xml)."""
    target = path.with_name(path.name + ".asc")
    _signed_to(target, ["--armor", "--detach-sign"], path, key, progress,
               f"gpg: sign {path.name}")
    return target


def rpmsign(packages: Sequence[Path], key: SigningKey, progress: Progress | None = None) -> None:
    """Sign RPM packages in place (they must be private copies, never hardlinks)."""
    extra = "--batch --no-tty --pinentry-mode loopback"
    if key.passphrase_file is not None:
        extra += f" --passphrase-file {key.passphrase_file}"
    for start in range(0, len(packages), 200):
        chunk = packages[start:start + 200]
        run(["rpmsign", "--addsign",
             "--define", f"__gpg {GPG}",
             "--define", f"_gpg_name {key.fingerprint}",
             "--define", f"_gpg_path {key.gnupghome}",
             "--define", f"_gpg_sign_cmd_extra_args {extra}",
             *[str(p) for p in chunk]],
            what=f"rpmsign ({len(chunk)} packages)", progress=progress,
            env={"GNUPGHOME": str(key.gnupghome)}, hint=_hint(key))


# --- verification keyrings ------------------------------------------------------------------


def dearmor(data: bytes) -> bytes:
    """An OpenPGP key as binary packets (gpgv wants a binary keyring)."""
    text = data.strip()
    if not text.startswith(ARMOR_BEGIN):
        return data
    lines = text.decode("ascii", "replace").splitlines()[1:]
    body: list[str] = []
    in_headers = True
    for line in lines:
        if line.startswith("-----END"):
            break
        if in_headers:
            if not line.strip():
                in_headers = False
            elif ":" not in line:  # no armor headers at all
                in_headers = False
                body.append(line.strip())
            continue
        if line.startswith("="):  # CRC24 checksum line
            continue
        body.append(line.strip())
    try:
        return base64.b64decode("".join(body), validate=True)
    except ValueError as exc:
        raise InvalidInput(f"the public key is ASCII-armored but not valid base64: {exc}") from exc


@dataclass(frozen=True)
class Keyring:
    """A binary keyring holding only the given public key, with a private gpgv home."""

    directory: Path
    path: Path  # binary keyring, for gpgv and apt's signed-by
    armored: Path  # the key as given (armored or binary), for rpmkeys --import
    fingerprints: list[str]


def _fingerprints(binary: bytes, home: Path) -> list[str]:
    keyfile = home / "probe.gpg"
    keyfile.write_bytes(binary)
    shown = run([GPG, "--homedir", str(home), "--batch", "--with-colons", "--show-keys",
                 str(keyfile)], what="gpg --show-keys", ok=(0, 2))
    found: list[str] = []
    expect_fpr = False
    for line in shown.stdout.splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sub"):
            expect_fpr = True
        elif fields[0] == "fpr" and expect_fpr:
            found.append(fields[9].upper())
            expect_fpr = False
    keyfile.unlink()
    return found


@contextlib.contextmanager
def open_keyring(public_key: Path | bytes) -> Iterator[Keyring]:
    data = public_key if isinstance(public_key, bytes) else public_key.read_bytes()
    directory = Path(tempfile.mkdtemp(prefix="lm-keyring-"))
    try:
        home = directory / "home"
        home.mkdir(mode=0o700)
        binary = dearmor(data)
        path = directory / "key.gpg"
        path.write_bytes(binary)
        armored = directory / "key.asc"
        armored.write_bytes(data)
        fingerprints = _fingerprints(binary, home)
        if not fingerprints:
            raise InvalidInput("the public key file holds no OpenPGP public key")
        yield Keyring(directory, path, armored, fingerprints)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def gpgv(keyring: Keyring, signature: Path, data: Path | None = None,
         output: Path | None = None) -> str | None:
    """None if the signature is good and made by a key of `keyring`; else what is wrong.
    Inline-signed files (InRelease): `data` None, `output` receives the signed text."""
    command = ["gpgv", "--homedir", str(keyring.directory / "home"), "--keyring",
               str(keyring.path), "--status-fd", "1"]
    if output is not None:
        command += ["--output", str(output)]
    command.append(str(signature))
    if data is not None:
        command.append(str(data))
    result = run(command, what="gpgv", ok=range(0, 256))
    status = result.stdout
    good = (result.returncode == 0 and "[GNUPG:] VALIDSIG" in status
            and not re.search(r"\[GNUPG:\] (BADSIG|ERRSIG|EXPKEYSIG|REVKEYSIG|EXPSIG)", status))
    if good:
        return None
    reasons = re.findall(r"\[GNUPG:\] (BADSIG|ERRSIG|EXPKEYSIG|REVKEYSIG|EXPSIG|NODATA|NO_PUBKEY)",
                         status)
    why = ", ".join(sorted(set(reasons))) or f"gpgv exit {result.returncode}"
    detail = result.stderr.strip().splitlines()
    return f"signature check failed ({why})" + (f": {detail[-1]}" if detail else "")


@contextlib.contextmanager
def rpm_keyring(keyring: Keyring) -> Iterator[Path]:
    """An empty rpm database (--dbpath) holding only the key: for rpmkeys --checksig."""
    dbpath = keyring.directory / "rpmdb"
    if not dbpath.exists():
        dbpath.mkdir()
        run(["rpmkeys", "--dbpath", str(dbpath), "--import", str(keyring.armored)],
            what="rpmkeys --import")
    yield dbpath


def rpm_checksig(keyring: Keyring, packages: Sequence[Path],
                 progress: Progress | None = None) -> list[str]:
    """Problems (empty: every package carries a good signature by the keyring's key)."""
    problems: list[str] = []
    if not packages:
        return problems
    with rpm_keyring(keyring) as dbpath:
        for start in range(0, len(packages), 200):
            chunk = [str(p) for p in packages[start:start + 200]]
            result = run(["rpmkeys", "--dbpath", str(dbpath), "--define",
                          "_pkgverify_level all", "--checksig", *chunk],
                         what=f"rpmkeys --checksig ({len(chunk)} packages)", progress=progress,
                         ok=range(0, 256))
            verdicts: dict[str, str] = {}
            for line in result.stdout.splitlines():
                path, sep, verdict = line.rpartition(": ")
                if sep and path in chunk:
                    verdicts[path] = verdict.strip()
            for path in chunk:
                verdict = verdicts.get(path)
                if verdict is None:
                    problems.append(f"{path}: rpmkeys gave no verdict ({result.stderr.strip()})")
                elif verdict != "digests signatures OK":
                    problems.append(f"{path}: package signature check failed: {verdict}")
    return problems
