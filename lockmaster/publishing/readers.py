"""The consistency reader: reads a repository the way apt and dnf do and lists every problem.

APT: `dists/<codename>/InRelease` (or `Release` + `Release.gpg`), signature checked with gpgv
against only the given public key; every index the Release lists fetched (through `by-hash/`
when the Release says `Acquire-By-Hash: yes`, as apt does) and checked against the listed
sizes and hashes, compressed variants against the uncompressed hashes too; every .deb the
Packages indices reference fetched and checked against size and hashes.

RPM: `repodata/repomd.xml` and its detached signature `repomd.xml.asc`; every metadata file
repomd lists checked (checksum, size, open-checksum after decompression); every package
primary.xml lists fetched and checked, and its signature checked with rpmkeys against only the
given key. createrepo_c 0.17 (Debian bookworm) compresses primary/filelists/other with gzip;
.xz, .bz2 and .zst are read as well.

A top-level file and its detached signature are two requests: if the repository switches
snapshots between them they do not match. Like a careful client, the reader reads the top-level
file again after the signature and starts over (up to 5 times) if it changed, so it reports
only real inconsistencies. Over HTTP (`read_*_repository(url, ...)`) or on a directory tree
(verify.py uses the same code with `DirectorySource`).
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from lockmaster.publishing import metadata
from lockmaster.publishing.errors import PublishError
from lockmaster.publishing.signing import Keyring, gpgv, open_keyring, rpm_checksig
from lockmaster.publishing.tools import CHUNK, Heartbeat, Progress, is_plain_relative

MAX_METADATA = 512 << 20
REREADS = 5


class Missing(Exception):
    """The file does not exist (HTTP 404, ENOENT)."""


class Source(Protocol):
    def describe(self, rel: str) -> str: ...

    def open(self, rel: str) -> contextlib.AbstractContextManager[BinaryIO]: ...

    def local_path(self, rel: str) -> Path | None: ...

    def trusted(self, rel: str, sha256: str | None) -> bool: ...


class HTTPSource:
    """Files under a base URL, fetched with urllib (one request per file, like apt)."""

    def __init__(self, base_url: str, timeout: float = 30.0,
                 after_fetch: Callable[[str], None] | None = None) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = timeout
        self.after_fetch = after_fetch  # called with each relative path once opened

    def describe(self, rel: str) -> str:
        return self.base_url + rel

    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        try:
            response = urllib.request.urlopen(self.base_url + rel, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code in (403, 404, 410):
                raise Missing(f"HTTP {exc.code}") from exc
            raise
        with response:
            if self.after_fetch:
                self.after_fetch(rel)
            yield response

    def local_path(self, rel: str) -> Path | None:
        return None

    def trusted(self, rel: str, sha256: str | None) -> bool:
        return False


class DirectorySource:
    """Files of a repository tree on disk. `trusted(rel, sha256)` may name files already
    verified with that hash (e.g. hardlinks of a verified snapshot's files): their size is
    checked, their content not hashed again."""

    def __init__(self, root: Path,
                 trusted: Callable[[str, str | None], bool] | None = None) -> None:
        self.root = root
        self._trusted = trusted

    def describe(self, rel: str) -> str:
        return str(self.root / rel)

    @contextlib.contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        try:
            handle = (self.root / rel).open("rb")
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise Missing("no such file") from exc
        with handle:
            yield handle

    def local_path(self, rel: str) -> Path | None:
        return self.root / rel

    def trusted(self, rel: str, sha256: str | None) -> bool:
        return bool(self._trusted and self._trusted(rel, sha256))


@dataclass
class RepositoryRead:
    """What one read found. `problems` empty: the repository is consistent."""

    location: str
    problems: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)  # package paths the metadata references
    revision: str = ""  # Release's Date, or repomd's revision
    checked_files: int = 0


class _Failed(Exception):
    """Stop reading: the problem is recorded."""


def _read(source: Source, rel: str, limit: int = MAX_METADATA) -> bytes:
    with source.open(rel) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"larger than {limit} bytes")
    return data


def _fetch_or_problem(source: Source, rel: str, read: RepositoryRead, why: str) -> bytes | None:
    try:
        return _read(source, rel)
    except Missing:
        read.problems.append(f"{source.describe(rel)}: missing ({why})")
    except (OSError, urllib.error.URLError) as exc:
        read.problems.append(f"{source.describe(rel)}: cannot fetch ({exc})")
    return None


def _hashes_match(rel_desc: str, data: bytes, size: int | None, hashes: dict[str, str]
                  ) -> list[str]:
    problems: list[str] = []
    if size is not None and len(data) != size:
        problems.append(f"{rel_desc}: size {len(data)} but {size} listed")
    for algo, expected in hashes.items():
        got = hashlib.new(algo, data).hexdigest()
        if got != expected:
            problems.append(f"{rel_desc}: {algo} {got} but {expected} listed")
    return problems


def _check_file(source: Source, rel: str, size: int | None, hashes: dict[str, str],
                read: RepositoryRead, beat: Heartbeat, copy_to: Path | None = None) -> bool:
    """Stream one (package) file, comparing size and hashes. True if it matched."""
    read.checked_files += 1
    where = source.describe(rel)
    if not is_plain_relative(rel):
        read.problems.append(f"{where}: not a plain relative path inside the repository")
        return False
    local = source.local_path(rel)
    if local is not None and source.trusted(rel, hashes.get("sha256")):
        try:
            actual = local.stat().st_size
        except OSError:
            read.problems.append(f"{where}: missing (referenced by the metadata)")
            return False
        if size is not None and actual != size:
            read.problems.append(f"{where}: size {actual} but {size} listed")
            return False
        return True
    digests = {algo: hashlib.new(algo) for algo in hashes}
    length = 0
    try:
        with source.open(rel) as handle, (copy_to.open("wb") if copy_to
                                          else contextlib.nullcontext()) as out:
            while chunk := handle.read(CHUNK):
                length += len(chunk)
                for digest in digests.values():
                    digest.update(chunk)
                if out is not None:
                    out.write(chunk)
                beat.tick(f"checking {rel}")
    except Missing:
        read.problems.append(f"{where}: missing (referenced by the metadata)")
        return False
    except (OSError, urllib.error.URLError) as exc:
        read.problems.append(f"{where}: cannot fetch ({exc})")
        return False
    ok = True
    if size is not None and length != size:
        read.problems.append(f"{where}: size {length} but {size} listed")
        ok = False
    for algo, digest in digests.items():
        if digest.hexdigest() != hashes[algo]:
            read.problems.append(f"{where}: {algo} {digest.hexdigest()} but {hashes[algo]} "
                                 "listed")
            ok = False
    return ok


def _signed_pair(source: Source, keyring: Keyring, data_rel: str, sig_rel: str,
                 read: RepositoryRead) -> bytes:
    """Read a file and its detached signature consistently, then check the signature."""
    for _ in range(REREADS):
        first = _fetch_or_problem(source, data_rel, read, "the signed top-level file")
        signature = _fetch_or_problem(source, sig_rel, read, "its detached signature")
        if first is None or signature is None:
            raise _Failed
        again = _fetch_or_problem(source, data_rel, read, "the signed top-level file")
        if again is None:
            raise _Failed
        if again == first:
            break
    else:
        read.problems.append(f"{source.describe(data_rel)}: changed on every read "
                             f"({REREADS} times)")
        raise _Failed
    with tempfile.TemporaryDirectory(dir=keyring.directory) as scratch:
        data_file = Path(scratch) / "data"
        sig_file = Path(scratch) / "data.sig"
        data_file.write_bytes(first)
        sig_file.write_bytes(signature)
        problem = gpgv(keyring, sig_file, data_file)
    if problem:
        read.problems.append(f"{source.describe(sig_rel)}: {problem}")
        raise _Failed
    return first


def _inline_signed(source: Source, keyring: Keyring, rel: str, data: bytes,
                   read: RepositoryRead) -> bytes:
    with tempfile.TemporaryDirectory(dir=keyring.directory) as scratch:
        signed = Path(scratch) / "InRelease"
        content = Path(scratch) / "content"
        signed.write_bytes(data)
        problem = gpgv(keyring, signed, output=content)
        if problem:
            read.problems.append(f"{source.describe(rel)}: {problem}")
            raise _Failed
        return content.read_bytes()


def _by_hash_path(path: str, entry: metadata.IndexFile) -> str:
    for algo in ("sha512", "sha256"):
        if algo in entry.hashes:
            directory = posixpath.dirname(path)
            prefix = f"{directory}/" if directory else ""
            return f"{prefix}by-hash/{metadata.BY_HASH_DIRS[algo]}/{entry.hashes[algo]}"
    return path


def scan_apt(source: Source, keyring: Keyring, codename: str,
             progress: Progress | None = None, *, named_indices: bool = False
             ) -> RepositoryRead:
    """Read an APT repository through `source`; see the module docstring. With by-hash, apt
    fetches only the by-hash copies of the indices (the named files may belong to a newer
    snapshot by then); `named_indices` checks the named files too (for a tree at rest)."""
    read = RepositoryRead(location=source.describe(""))
    beat = Heartbeat(progress)
    dist = f"dists/{codename}"
    try:
        try:
            inrelease = _read(source, f"{dist}/InRelease")
        except Missing:
            inrelease = None
        except (OSError, urllib.error.URLError) as exc:
            read.problems.append(f"{source.describe(dist + '/InRelease')}: cannot fetch ({exc})")
            raise _Failed from exc
        if inrelease is not None:
            text = _inline_signed(source, keyring, f"{dist}/InRelease", inrelease, read)
        else:
            text = _signed_pair(source, keyring, f"{dist}/Release", f"{dist}/Release.gpg", read)
        try:
            fields = metadata.parse_release(text.decode("utf-8"))
            files = metadata.release_files(fields)
        except (metadata.MetadataError, UnicodeDecodeError) as exc:
            read.problems.append(f"{source.describe(dist)}: bad Release: {exc}")
            raise _Failed from exc
        read.revision = fields.get("Date", "")
        if codename not in (fields.get("Codename"), fields.get("Suite")):
            read.problems.append(f"{source.describe(dist)}: Release is for "
                                 f"{fields.get('Codename')!r}, not {codename!r}")
        by_hash = fields.get("Acquire-By-Hash", "").lower() == "yes"
        indices: dict[str, list[tuple[str, bytes]]] = {}  # uncompressed path -> variants
        for path, entry in sorted(files.items()):
            if not is_plain_relative(path):
                read.problems.append(f"{source.describe(dist)}: Release lists {path!r}")
                continue
            rels = [f"{dist}/{_by_hash_path(path, entry)}"] if by_hash else []
            if named_indices or not by_hash:
                rels.append(f"{dist}/{path}")
            contents: list[bytes] = []
            known_problems = len(read.problems)
            for rel in rels:
                fetched = _fetch_or_problem(source, rel, read, f"listed in Release as {path}")
                beat.tick(f"checking {rel}")
                if fetched is not None:
                    read.problems += _hashes_match(source.describe(rel), fetched, entry.size,
                                                   entry.hashes)
                    contents.append(fetched)
            rel = rels[0]
            plain_path = metadata.strip_compression(path)
            if (len(read.problems) > known_problems
                    or posixpath.basename(plain_path) != "Packages"):
                continue
            data = contents[0]
            try:
                plain = metadata.decompress(path, data)
            except metadata.MetadataError as exc:
                read.problems.append(f"{source.describe(rel)}: {exc}")
                continue
            if plain_path != path and plain_path in files:
                read.problems += _hashes_match(f"{source.describe(rel)} (uncompressed)", plain,
                                               files[plain_path].size,
                                               files[plain_path].hashes)
            indices.setdefault(plain_path, []).append((rel, plain))
        referenced: dict[str, metadata.DebEntry] = {}
        for plain_path, variants in sorted(indices.items()):
            if len({content for _, content in variants}) > 1:
                read.problems.append(f"{source.describe(dist + '/' + plain_path)}: compressed "
                                     "variants differ")
            rel, content = variants[0]
            try:
                entries = metadata.parse_packages(content.decode("utf-8"))
            except (metadata.MetadataError, UnicodeDecodeError) as exc:
                read.problems.append(f"{source.describe(rel)}: bad Packages index: {exc}")
                continue
            for deb in entries:
                seen = referenced.setdefault(deb.filename, deb)
                if seen.size != deb.size or seen.hashes != deb.hashes:
                    read.problems.append(f"{deb.filename}: listed twice with different sizes "
                                         "or hashes")
        if not indices:
            read.problems.append(f"{source.describe(dist)}: Release lists no Packages index")
        for filename, deb in sorted(referenced.items()):
            _check_file(source, filename, deb.size, deb.hashes, read, beat)
        read.packages = sorted(referenced)
    except _Failed:
        pass
    return read


def scan_rpm(source: Source, keyring: Keyring, *, check_signatures: bool = True,
             progress: Progress | None = None) -> RepositoryRead:
    """Read an RPM repository through `source`; see the module docstring."""
    read = RepositoryRead(location=source.describe(""))
    beat = Heartbeat(progress)
    try:
        repomd = _signed_pair(source, keyring, "repodata/repomd.xml",
                              "repodata/repomd.xml.asc", read)
        try:
            read.revision, datas = metadata.parse_repomd(repomd)
        except metadata.MetadataError as exc:
            read.problems.append(f"{source.describe('repodata/repomd.xml')}: {exc}")
            raise _Failed from exc
        primary: list[metadata.RpmEntry] | None = None
        for data in datas:
            if not is_plain_relative(data.href):
                read.problems.append(f"repomd.xml: {data.type} at {data.href!r} is not inside "
                                     "the repository")
                continue
            content = _fetch_or_problem(source, data.href, read, f"repomd.xml {data.type}")
            beat.tick(f"checking {data.href}")
            if content is None:
                continue
            found = _hashes_match(source.describe(data.href), content, data.size,
                                  {data.checksum[0]: data.checksum[1]})
            read.problems += found
            if found:
                continue
            plain = content
            if data.open_checksum is not None:
                try:
                    plain = metadata.decompress(data.href, content)
                except metadata.MetadataError as exc:
                    read.problems.append(f"{source.describe(data.href)}: {exc}")
                    continue
                read.problems += _hashes_match(
                    f"{source.describe(data.href)} (uncompressed)", plain, data.open_size,
                    {data.open_checksum[0]: data.open_checksum[1]})
            if data.type == "primary":
                try:
                    primary = metadata.parse_primary(plain)
                except metadata.MetadataError as exc:
                    read.problems.append(f"{source.describe(data.href)}: {exc}")
        if primary is None:
            read.problems.append(f"{source.describe('repodata/repomd.xml')}: no usable primary "
                                 "metadata")
            raise _Failed
        to_verify: dict[str, str] = {}  # local file -> package path
        with tempfile.TemporaryDirectory(dir=keyring.directory) as scratch:
            for number, entry in enumerate(sorted(primary, key=lambda e: e.href)):
                local = source.local_path(entry.href)
                copy_to = None
                if local is None and check_signatures:
                    copy_to = Path(scratch) / f"{number}.rpm"
                algo, digest = entry.checksum
                ok = _check_file(source, entry.href, entry.size, {algo: digest}, read, beat,
                                 copy_to)
                trusted = source.trusted(entry.href, digest if algo == "sha256" else None)
                file = copy_to or local
                if ok and check_signatures and not trusted and file is not None:
                    to_verify[str(file)] = entry.href
            problems = rpm_checksig(keyring, [Path(p) for p in to_verify], progress=beat.raw)
            for problem in problems:
                path, _, rest = problem.partition(": ")
                shown = source.describe(to_verify[path]) if path in to_verify else path
                read.problems.append(f"{shown}: {rest}")
        read.packages = sorted(e.href for e in primary)
    except _Failed:
        pass
    return read


def _with_keyring(public_key: Path | bytes, scan: Callable[[Keyring], RepositoryRead],
                  location: str) -> RepositoryRead:
    try:
        with open_keyring(public_key) as keyring:
            return scan(keyring)
    except (PublishError, OSError) as exc:
        return RepositoryRead(location=location, problems=[f"public key: {exc}"])


def read_apt_repository(base_url: str, public_key: Path | bytes, codename: str, *,
                        source: Source | None = None, timeout: float = 30.0,
                        progress: Progress | None = None) -> RepositoryRead:
    found = source or HTTPSource(base_url, timeout)
    return _with_keyring(public_key, lambda k: scan_apt(found, k, codename, progress), base_url)


def check_apt_repository(base_url: str, public_key: Path | bytes, codename: str) -> list[str]:
    """Problems found reading the APT repository at `base_url` (empty: consistent)."""
    return read_apt_repository(base_url, public_key, codename).problems


def read_rpm_repository(base_url: str, public_key: Path | bytes, *,
                        check_signatures: bool = True, source: Source | None = None,
                        timeout: float = 30.0,
                        progress: Progress | None = None) -> RepositoryRead:
    found = source or HTTPSource(base_url, timeout)
    return _with_keyring(
        public_key,
        lambda k: scan_rpm(found, k, check_signatures=check_signatures, progress=progress),
        base_url)


def check_rpm_repository(base_url: str, public_key: Path | bytes) -> list[str]:
    """Problems found reading the RPM repository at `base_url` (empty: consistent)."""
    return read_rpm_repository(base_url, public_key).problems


def same_file(a: Path, b: Path) -> bool:
    """True if both paths are the same inode (a hardlink of an already verified file)."""
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:
        return False
    return (sa.st_ino, sa.st_dev) == (sb.st_ino, sb.st_dev)


__all__ = [
    "DirectorySource",
    "HTTPSource",
    "Missing",
    "RepositoryRead",
    "Source",
    "check_apt_repository",
    "check_rpm_repository",
    "read_apt_repository",
    "read_rpm_repository",
    "same_file",
    "scan_apt",
    "scan_rpm",
]
