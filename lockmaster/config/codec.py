"""`codec:` in lockmaster.yaml: payload encryption (docs/codec.md).

With `codec.key-file` set, every Temporal client lockmaster makes (workers, the CLI, the hooks
and listener, `lockmaster run`) encrypts the payloads it sends (workflow and activity inputs and
results, signals, queries, updates, memos) with AES-GCM under the key file's current key, and
decrypts with any key the file holds (lockmaster/temporal/codec.py). The Temporal server, its
database and anyone reading histories without the key see ciphertext only. Search attributes and
workflow IDs are NOT encrypted by a codec: secrets never go there.

`codec.serve` is the codec server (`lockmaster codec-server`): it decrypts for the Web UI and the
`temporal` CLI (`--codec-endpoint`), for those who hold its token.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from lockmaster.config.base import ConfigModel

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class CodecServeConfig(ConfigModel):
    """The codec server's settings (`lockmaster codec-server`; `lockmaster run` starts it when
    this is set). Its options override them."""

    listen: str = "127.0.0.1"
    port: int = Field(default=8081, gt=0, lt=65536)
    # The bearer token callers must send (`Authorization: Bearer <token>`), one line. Without
    # it the server refuses to listen anywhere but on loopback.
    token_file: Path | None = None
    # The Web UI origins (scheme://host:port, as the browser shows it) allowed to call it
    # from a page: the dev server's UI by default.
    cors_origins: list[str] = Field(
        default_factory=lambda: ["http://localhost:8233", "http://127.0.0.1:8233"])

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        return [check_origin(value) for value in values]


def check_origin(value: str) -> str:
    """An origin as browsers send it (scheme://host[:port], no path); ValueError otherwise."""
    parts = urlsplit(value)
    if (parts.scheme not in ("http", "https") or not parts.netloc
            or parts.path not in ("", "/") or parts.query or parts.fragment):
        raise ValueError(f"{value!r} is not an origin: write scheme://host[:port] with no path "
                         "(e.g. http://localhost:8080, the Web UI's address)")
    return f"{parts.scheme}://{parts.netloc}"


class CodecConfig(ConfigModel):
    # The keys, one per line `<id>: <base64 key>` (16, 24 or 32 bytes; 32 recommended). The
    # FIRST encrypts; every one decrypts (rotation: put a new key first, keep the old ones as
    # long as histories encrypted with them are kept). Must not be readable by others.
    key_file: Path
    # false: decrypt only, send in clear (turning encryption off: histories encrypted so far
    # stay readable as long as the keys are here).
    encrypt: bool = True
    serve: CodecServeConfig | None = None
