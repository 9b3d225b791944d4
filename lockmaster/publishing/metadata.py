"""Parsers for the repository metadata clients read: APT's Release and Packages (deb822), and
RPM's repomd.xml and primary.xml; decompression by file suffix. Pure functions, no I/O except
running `zstd` for .zst files (not in Python 3.11's standard library)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

# Release hash sections -> hashlib names, strongest last
RELEASE_HASHES = {"MD5Sum": "md5", "SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
# Packages stanza fields -> hashlib names
PACKAGE_HASHES = {"MD5sum": "md5", "SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
# by-hash directories apt uses, by the strongest hash the Release lists
BY_HASH_DIRS = {"sha256": "SHA256", "sha512": "SHA512"}

REPO_NS = "{http://linux.duke.edu/metadata/repo}"
COMMON_NS = "{http://linux.duke.edu/metadata/common}"
RPM_NS = "{http://linux.duke.edu/metadata/rpm}"
RPM_CHECKSUMS = {"sha": "sha1", "sha1": "sha1", "sha224": "sha224", "sha256": "sha256",
                 "sha384": "sha384", "sha512": "sha512", "md5": "md5"}


class MetadataError(ValueError):
    """A metadata file cannot be parsed."""


def parse_deb822(text: str) -> list[dict[str, str]]:
    """Stanzas of `Key: value` fields; continuation lines are kept, joined with newlines."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, None
        elif line[0] in " \t":
            if last is None:
                raise MetadataError(f"line {number}: continuation line without a field")
            current[last] += "\n" + line.strip()
        else:
            key, sep, value = line.partition(":")
            if not sep or not key or " " in key:
                raise MetadataError(f"line {number}: not a 'Field: value' line: {line[:80]!r}")
            last = key.strip()
            current[last] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


@dataclass
class IndexFile:
    """A file a Release lists: its size and hashes by algorithm (hashlib names)."""

    path: str
    size: int
    hashes: dict[str, str] = field(default_factory=dict)

    def strongest(self) -> tuple[str, str]:
        for algo in ("sha512", "sha256", "sha1", "md5"):
            if algo in self.hashes:
                return algo, self.hashes[algo]
        raise MetadataError(f"{self.path}: no hash listed")


def release_files(fields: dict[str, str]) -> dict[str, IndexFile]:
    """The files a Release lists, from its MD5Sum/SHA1/SHA256/SHA512 sections."""
    files: dict[str, IndexFile] = {}
    for section, algo in RELEASE_HASHES.items():
        for line in fields.get(section, "").splitlines():
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 3 or not parts[1].isdigit():
                raise MetadataError(f"{section}: malformed line {line!r}")
            digest, size, path = parts[0].lower(), int(parts[1]), parts[2]
            entry = files.setdefault(path, IndexFile(path, size))
            if entry.size != size:
                raise MetadataError(f"{path}: listed with sizes {entry.size} and {size}")
            entry.hashes[algo] = digest
    return files


def parse_release(text: str) -> dict[str, str]:
    stanzas = parse_deb822(text)
    if len(stanzas) != 1:
        raise MetadataError(f"a Release file has one stanza, this one has {len(stanzas)}")
    return stanzas[0]


def strip_compression(path: str) -> str:
    for suffix in (".gz", ".xz", ".bz2", ".lzma", ".zst"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def decompress(path: str, data: bytes) -> bytes:
    """`data` uncompressed according to the suffix of `path` (unknown suffix: as is)."""
    try:
        if path.endswith(".gz"):
            return gzip.decompress(data)
        if path.endswith((".xz", ".lzma")):
            return lzma.decompress(data)
        if path.endswith(".bz2"):
            return bz2.decompress(data)
        if path.endswith(".zst"):
            result = subprocess.run(["zstd", "-dcq"], input=data, capture_output=True,
                                    check=False)
            if result.returncode != 0:
                raise MetadataError(result.stderr.decode("utf-8", "replace").strip())
            return result.stdout
        if path.endswith(".zck"):
            raise MetadataError("zchunk files are not supported")
    except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise MetadataError(f"cannot decompress {path}: {exc}") from exc
    return data


@dataclass(frozen=True)
class DebEntry:
    """One stanza of a Packages index."""

    package: str
    version: str
    architecture: str
    filename: str
    size: int
    hashes: dict[str, str]


def parse_packages(text: str) -> list[DebEntry]:
    entries: list[DebEntry] = []
    for stanza in parse_deb822(text):
        try:
            entries.append(DebEntry(
                package=stanza["Package"],
                version=stanza["Version"],
                architecture=stanza["Architecture"],
                filename=stanza["Filename"],
                size=int(stanza["Size"]),
                hashes={algo: stanza[key].lower() for key, algo in PACKAGE_HASHES.items()
                        if key in stanza},
            ))
        except (KeyError, ValueError) as exc:
            name = stanza.get("Package", "?")
            raise MetadataError(f"Packages stanza {name}: missing or bad field {exc}") from exc
    return entries


@dataclass(frozen=True)
class RepomdData:
    type: str
    href: str
    checksum: tuple[str, str]  # (hashlib name, hex)
    open_checksum: tuple[str, str] | None
    size: int | None
    open_size: int | None


def _checksum(element: ET.Element | None, where: str) -> tuple[str, str] | None:
    if element is None:
        return None
    kind = RPM_CHECKSUMS.get((element.get("type") or "").lower())
    if kind is None or not element.text:
        raise MetadataError(f"{where}: unknown checksum type {element.get('type')!r}")
    return kind, element.text.strip().lower()


def _int(element: ET.Element | None) -> int | None:
    return int(element.text) if element is not None and element.text else None


def parse_repomd(data: bytes) -> tuple[str, list[RepomdData]]:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise MetadataError(f"repomd.xml is not XML: {exc}") from exc
    if root.tag != f"{REPO_NS}repomd":
        raise MetadataError(f"repomd.xml: unexpected root element {root.tag}")
    revision = (root.findtext(f"{REPO_NS}revision") or "").strip()
    found: list[RepomdData] = []
    for data_element in root.findall(f"{REPO_NS}data"):
        kind = data_element.get("type") or "?"
        location = data_element.find(f"{REPO_NS}location")
        href = location.get("href") if location is not None else None
        checksum = _checksum(data_element.find(f"{REPO_NS}checksum"), f"repomd {kind}")
        if not href or checksum is None:
            raise MetadataError(f"repomd.xml: data {kind} has no location or checksum")
        found.append(RepomdData(
            type=kind, href=href, checksum=checksum,
            open_checksum=_checksum(data_element.find(f"{REPO_NS}open-checksum"),
                                    f"repomd {kind}"),
            size=_int(data_element.find(f"{REPO_NS}size")),
            open_size=_int(data_element.find(f"{REPO_NS}open-size")),
        ))
    return revision, found


@dataclass(frozen=True)
class RpmEntry:
    name: str
    epoch: str
    version: str
    release: str
    arch: str
    href: str
    checksum: tuple[str, str]
    size: int

    @property
    def evr(self) -> str:
        vr = f"{self.version}-{self.release}"
        return vr if self.epoch in ("", "0") else f"{self.epoch}:{vr}"


def parse_primary(data: bytes) -> list[RpmEntry]:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise MetadataError(f"primary.xml is not XML: {exc}") from exc
    entries: list[RpmEntry] = []
    for package in root.findall(f"{COMMON_NS}package"):
        name = package.findtext(f"{COMMON_NS}name") or "?"
        version = package.find(f"{COMMON_NS}version")
        location = package.find(f"{COMMON_NS}location")
        size = package.find(f"{COMMON_NS}size")
        checksum = _checksum(package.find(f"{COMMON_NS}checksum"), f"primary {name}")
        if version is None or location is None or size is None or checksum is None:
            raise MetadataError(f"primary.xml: package {name} lacks version/location/size/"
                                "checksum")
        if location.get("{http://www.w3.org/XML/1998/namespace}base") or location.get("base"):
            raise MetadataError(f"primary.xml: package {name} points to another base URL")
        entries.append(RpmEntry(
            name=name,
            epoch=version.get("epoch") or "0",
            version=version.get("ver") or "",
            release=version.get("rel") or "",
            arch=package.findtext(f"{COMMON_NS}arch") or "",
            href=location.get("href") or "",
            checksum=checksum,
            size=int(size.get("package") or -1),
        ))
    return entries
