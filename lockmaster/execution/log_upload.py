"""Putting a build's logs into the log store over HTTP (logs.store driver http): the client.

Every call is idempotent: a file is put whole (the server replaces it atomically), a log's
growth is appended only at the offset the server holds (otherwise the whole file is put), a
directory is deleted whatever is there. Blocking (httpx's sync client): call it in a thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx

from lockmaster.execution.artifacts import ARTIFACTS_DIR
from lockmaster.execution.logs import LOG_NAME
from lockmaster.logserver import TEMP_PREFIX, TokenError, read_token

log = logging.getLogger(__name__)

PENDING = ".lockmaster-undelivered"  # in a spooled build's directory: not delivered yet


class UploadError(Exception):
    """The store did not take an upload; the message says what, where and how to fix it."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LogStoreClient:
    def __init__(self, url: str, token_file: Path, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.timeout = timeout

    def _url(self, relative: str) -> str:
        return f"{self.url}/{quote(relative.strip('/'))}"

    def _headers(self) -> dict[str, str]:
        try:
            token = read_token(self.token_file)  # read each time: a rotated token is used
        except TokenError as exc:
            raise UploadError(str(exc)) from None
        return {"Authorization": f"Bearer {token}"}

    def _send(self, method: str, relative: str, body: bytes | Iterable[bytes] | None = None,
              headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200, 201, 204)
              ) -> httpx.Response:
        url = self._url(relative) + ("/" if relative.endswith("/") else "")
        try:
            response = httpx.request(method, url, content=body,
                                     headers={**self._headers(), **(headers or {})},
                                     timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise UploadError(f"the log store at {self.url} did not answer {method} {relative}: "
                              f"{type(exc).__name__}: {exc}") from None
        if response.status_code in ok:
            return response
        text = response.text.strip()[:300]
        if response.status_code == 401:
            raise UploadError(
                f"the log store at {self.url} refused the token (401: {text}); the token in "
                f"{self.token_file} (logs.store.token-file) must be the log store's",
                response.status_code)
        raise UploadError(f"the log store at {self.url} refused {method} {relative}: "
                          f"{response.status_code} {text}", response.status_code)

    def put(self, relative: str, path: Path) -> int:
        """The file, streamed (artifacts and logs may be large); returns the bytes sent."""
        with path.open("rb") as source:
            size = os.fstat(source.fileno()).st_size

            def chunks() -> Iterator[bytes]:
                remaining = size  # what it held when sent: a file that grows meanwhile is cut
                while remaining > 0:
                    chunk = source.read(min(1 << 20, remaining))
                    if not chunk:
                        raise UploadError(f"{path} shrank while it was sent")
                    remaining -= len(chunk)
                    yield chunk

            self._send("PUT", relative, chunks(), {"Content-Length": str(size)})
        return size

    def append(self, relative: str, data: bytes, offset: int) -> int | None:
        """The store's new size, or None when it does not hold exactly `offset` bytes."""
        headers = {"Content-Range": f"bytes {offset}-{offset + max(len(data), 1) - 1}/*"}
        response = self._send("PUT", relative, data, headers, ok=(200, 201, 204, 409))
        if response.status_code == 409:
            return None
        return offset + len(data)

    def delete_tree(self, relative: str) -> None:
        self._send("DELETE", relative.rstrip("/") + "/")


def files(directory: Path) -> Iterator[tuple[str, Path]]:
    """The regular files under `directory` (relative POSIX path, path), links left out."""
    for top, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            path = Path(top) / name
            if name == PENDING or name.startswith(TEMP_PREFIX) or path.is_symlink():
                continue
            yield path.relative_to(directory).as_posix(), path


class LogFollower:
    """Keeps one file in the store as long as the local one (which only grows): the first push
    puts it whole (whatever an earlier try left there is replaced), later ones append."""

    def __init__(self, client: LogStoreClient, relative: str, path: Path) -> None:
        self.client = client
        self.relative = relative
        self.path = path
        self.sent = -1  # bytes the store holds; -1: not put yet
        # The live pushes and the final delivery run in threads: one push at a time.
        self.lock = threading.Lock()

    def push(self) -> None:
        with self.lock:
            self._push()

    def _push(self) -> None:
        size = self.path.stat().st_size
        if self.sent == size:
            return
        if self.sent >= 0:
            with self.path.open("rb") as source:
                source.seek(self.sent)
                data = source.read(size - self.sent)
            held = self.client.append(self.relative, data, self.sent)
            if held is not None:
                self.sent = held
                return
        self.sent = self.client.put(self.relative, self.path)


def deliver(client: LogStoreClient, directory: Path, log_path: str,
            follower: LogFollower | None = None) -> int:
    """Put everything in a build's local `directory` into the store under `log_path`; the
    artifacts directory there is replaced as a whole. Returns the files sent."""
    base = log_path.strip("/")
    client.delete_tree(f"{base}/{ARTIFACTS_DIR}/")
    sent = 0
    for relative, path in files(directory):
        if follower is not None and relative == LOG_NAME:
            follower.push()
        else:
            client.put(f"{base}/{relative}", path)
        sent += 1
    return sent
