"""Payload encryption: AES-GCM over every payload lockmaster's Temporal clients send
(docs/codec.md). The codec sits under the pydantic data converter: a payload is first JSON (as
always), then the whole serialized Payload (metadata and data) is encrypted into the data of a
new one whose metadata says only `encoding: binary/encrypted` and which key id it used.

Keys come from a key file, one `<id>: <base64 key>` per line: the first encrypts, every one
decrypts. Rotating is putting a new key first and keeping the old ones for as long as histories
encrypted with them are kept. A payload that is not encrypted (its metadata says another
encoding) is passed through on decode: a deployment turns encryption on with workflows running.

Failure messages and stack traces are encrypted too (moved into an encoded attribute: the
server shows "Encoded failure"; the SDK, the Web UI and the CLI with the codec server restore
them). Search attributes and workflow IDs are never encoded by a codec: secrets must not go there.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12  # AES-GCM's standard nonce; random per payload (2^32 payloads per key is safe)
KEY_SIZES = (16, 24, 32)
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Bound into every ciphertext (AES-GCM's associated data) with the key id, so a payload's
# key id cannot be changed without its decryption failing.
AAD_PREFIX = b"lockmaster-codec/1:"
NEW_KEY = 'echo "<id>: $(openssl rand -base64 32)"'


class CodecError(Exception):
    """A payload cannot be encrypted or decrypted, or the keys cannot be loaded; `str()` says
    what, where and how to fix it."""


class KeyFileError(CodecError):
    """The key file is missing, readable by others, or not in the key file's format."""


class UnknownKeyError(CodecError):
    """A payload was encrypted with a key id the key file does not hold."""

    def __init__(self, key_id: str, keys: KeyRing) -> None:
        super().__init__(
            f"a payload is encrypted with key id {key_id!r}, which the key file "
            f"{keys.source or '(given in code)'} does not hold (it holds: "
            f"{', '.join(keys.ids)}); add the key with id {key_id!r} back to the key file "
            "(keep every old key as long as histories encrypted with it are kept: rotating "
            "puts a new key first, it removes none)")
        self.key_id = key_id


@dataclass(frozen=True)
class KeyRing:
    """The keys by id, in the key file's order: the first encrypts."""

    keys: tuple[tuple[str, bytes], ...]
    source: Path | None = None

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyFileError(f"the key file {self.source} holds no key; add one: {NEW_KEY}")

    @property
    def current(self) -> tuple[str, bytes]:
        return self.keys[0]

    @property
    def ids(self) -> list[str]:
        return [key_id for key_id, _ in self.keys]

    def get(self, key_id: str) -> bytes | None:
        return next((key for found, key in self.keys if found == key_id), None)


def parse_keys(text: str, source: Path | None = None) -> KeyRing:
    """The keys in a key file's text: `<id>: <base64 key>` per line; blank lines and lines
    starting with # are skipped. KeyFileError names the line and what is wrong with it."""
    where = str(source) if source else "the key file"
    keys: list[tuple[str, bytes]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        at = f"{where}, line {number}"
        key_id, colon, value = line.partition(":")
        key_id, value = key_id.strip(), value.strip()
        if not colon or not value:
            raise KeyFileError(f"{at}: expected '<id>: <base64 key>' (make one with {NEW_KEY})")
        if not ID_PATTERN.fullmatch(key_id):
            raise KeyFileError(f"{at}: key id {key_id!r} is not usable: letters, digits, '.', "
                               "'_' and '-', at most 64, starting with a letter or digit")
        if any(key_id == seen for seen, _ in keys):
            raise KeyFileError(f"{at}: key id {key_id!r} is defined twice; every key needs an "
                               "id of its own (payloads name the key by it)")
        try:
            key = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"{at}: the key of {key_id!r} is not base64 (make one with "
                               f"{NEW_KEY})") from None
        if len(key) not in KEY_SIZES:
            raise KeyFileError(f"{at}: the key of {key_id!r} is {len(key)} bytes; AES needs "
                               f"16, 24 or 32 (32 recommended: {NEW_KEY})")
        keys.append((key_id, key))
    return KeyRing(tuple(keys), source)


def load_keys(path: Path) -> KeyRing:
    """The key file at `path`: it must exist and not be readable, writable or executable by
    others (group access is the deployment's choice)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise KeyFileError(
            f"the codec key file {path} cannot be used ({exc.strerror or exc}): create it with "
            f"one key per line ({NEW_KEY}), chmod 600, or fix codec.key-file") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"the codec key file {path} is not a regular file; fix "
                           "codec.key-file")
    if info.st_mode & 0o007:
        raise KeyFileError(
            f"the codec key file {path} is open to other users (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): anyone on this host could read every "
            f"encrypted history; run: chmod o-rwx {path}   (e.g. chmod 600)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyFileError(f"the codec key file {path} cannot be read ({exc.strerror or exc}): "
                           "the user lockmaster runs as needs read access") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"the codec key file {path} is not text: expected "
                           "'<id>: <base64 key>' lines") from None
    return parse_keys(text, path)


def _aad(key_id: str) -> bytes:
    return AAD_PREFIX + key_id.encode()


def is_encrypted(payload: Payload) -> bool:
    return payload.metadata.get("encoding", b"") == ENCODING


class EncryptionCodec(PayloadCodec):
    """AES-GCM with the key ring's current key; decrypts with whichever key a payload names."""

    def __init__(self, keys: KeyRing, *, encrypt: bool = True) -> None:
        super().__init__()
        self.keys = keys
        # False: decrypt only (encryption being turned off; what is sent goes in clear).
        self.encrypting = encrypt
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.keys}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if not self.encrypting:
            return list(payloads)
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.decrypt_all(payloads)

    def encrypt(self, payload: Payload) -> Payload:
        key_id, _ = self.keys.current
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), _aad(key_id))
        return Payload(metadata={"encoding": ENCODING, KEY_ID: key_id.encode()},
                       data=nonce + sealed)

    def decrypt_all(self, payloads: Iterable[Payload]) -> list[Payload]:
        return [self.decrypt(p) if is_encrypted(p) else p for p in payloads]

    def decrypt(self, payload: Payload) -> Payload:
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownKeyError(key_id, self.keys)
        data = payload.data
        try:
            if len(data) <= NONCE_BYTES:
                raise InvalidTag
            clear = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _aad(key_id))
        except InvalidTag:
            raise CodecError(
                f"a payload encrypted with key id {key_id!r} failed authentication: it was "
                f"changed after it was encrypted, or the key file {self.keys.source} holds a "
                f"different key under the id {key_id!r} than the one that encrypted it (a key "
                "id must never be reused for a new key)") from None
        return Payload.FromString(clear)


def with_codec(converter: DataConverter, codec: PayloadCodec | None) -> DataConverter:
    """`converter` with `codec` under it (the pydantic converter stays the serializer). Failures'
    messages and stack traces are moved into an encoded payload too: an error's text (a URL, a
    command line) is as likely to hold a secret as a payload, and histories keep it."""
    if codec is None:
        return converter
    return dataclasses.replace(
        converter, payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes)
