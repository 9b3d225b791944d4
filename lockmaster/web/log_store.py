"""Reading the log store for the web's log viewer (docs/web.md, "Logs").

Two drivers, as in config LogsConfig: `directory` reads files under `logs.root` on this host;
`http` asks the log store server (`lockmaster logs serve`, at logs.store.url, or logs.url when
that is unset) over HTTP, which serves the same tree. Both answer the same questions: a slice of
a file from an offset (and the file's size and age), or a directory's entries.

Paths are checked before anything is read: a plain relative path (no `.`/`..`/empty segments,
no backslash or NUL) that stays inside the root after links are followed; anything else is a
BadLogPath (HTTP 400), never a read.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import re
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote

import httpx

from lockmaster.config.models import LockmasterConfig
from lockmaster.logserver import TEMP_PREFIX

CHUNK = 1 << 20  # the most one read returns: a page or an API call never holds a whole big log
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class BadLogPath(ValueError):
    """The path is not a plain relative path inside the log store (HTTP 400)."""


class LogNotFound(LookupError):
    """No such file or directory in the log store (HTTP 404)."""


class LogStoreUnavailable(RuntimeError):
    """The log store server did not answer (HTTP 502)."""


@dataclass
class LogSlice:
    data: bytes  # the bytes from `offset` (at most the limit asked for)
    offset: int
    size: int  # the whole file's size now
    mtime: float | None  # epoch seconds of the last change, when known


@dataclass
class Entry:
    name: str  # ends with "/" for a directory
    size: int | None


def clean_path(raw: str) -> str:
    """`raw` (the URL path after /logs/, percent-decoded by the router: decoded once, as every
    file server does, so a name with a "%" in it is found) as a plain relative path; a trailing
    "/" is kept (a directory). Raises BadLogPath."""
    path = raw
    if not path or path.startswith("/") or "\0" in path or "\\" in path:
        raise BadLogPath(f"{raw!r} is not a relative path inside the log store")
    parts = path.split("/")
    trailing = parts[-1] == ""
    if trailing:
        parts = parts[:-1]
    if not parts or any(part in ("", ".", "..") for part in parts):
        raise BadLogPath(f"{raw!r} has '.', '..' or empty segments: give the path of a log as "
                         "its build's log URL shows it, e.g. 42/1042/1/check/unit/abc1234/"
                         "job-output.txt")
    if any(part.startswith(TEMP_PREFIX) for part in parts):
        raise LogNotFound(f"{path}: no such log")  # an upload under way is not a log yet
    return "/".join(parts) + ("/" if trailing else "")


class DirectoryStore:
    """logs.store driver directory: the files under `root` on this host."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _resolve(self, relative: str) -> Path:
        root = self.root.resolve()
        target = (root / relative.rstrip("/")).resolve()
        if not target.is_relative_to(root):  # a link leading out of the store
            raise BadLogPath(f"{relative!r} leads outside the log store")
        return target

    async def read(self, relative: str, offset: int, limit: int = CHUNK) -> LogSlice:
        return await asyncio.to_thread(self._read, relative, offset, limit)

    def _read(self, relative: str, offset: int, limit: int) -> LogSlice:
        target = self._resolve(relative)
        try:
            with target.open("rb") as file:
                stat = os.fstat(file.fileno())
                if offset < stat.st_size:
                    file.seek(offset)
                    data = file.read(limit)
                else:
                    data = b""
        except IsADirectoryError:
            raise LogNotFound(f"{relative} is a directory: add '/' to list it") from None
        except (FileNotFoundError, NotADirectoryError):
            raise LogNotFound(f"{relative}: no such log in the log store") from None
        except PermissionError:
            raise LogNotFound(f"{relative}: not readable by the web server") from None
        return LogSlice(data, offset, stat.st_size, stat.st_mtime)

    async def listing(self, relative: str) -> list[Entry]:
        return await asyncio.to_thread(self._listing, relative)

    def _listing(self, relative: str) -> list[Entry]:
        target = self._resolve(relative)
        if not target.is_dir():
            raise LogNotFound(f"{relative}: no such directory in the log store")
        entries = []
        for child in sorted(target.iterdir()):
            if child.name.startswith(TEMP_PREFIX) or child.name.startswith("."):
                continue
            if child.is_dir():
                entries.append(Entry(child.name + "/", None))
            elif child.is_file():
                entries.append(Entry(child.name, child.stat().st_size))
        return entries


class _Links(HTMLParser):
    """The hrefs of a directory listing page (Python's http.server's or nginx's autoindex)."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            for name, value in attrs:
                if name == "href" and value:
                    self.hrefs.append(value)


class HttpStore:
    """logs.store driver http: the log store server's GET side. A Range request asks for the
    slice; a server that ignores Range (Python's http.server) sends the whole file, which is
    cut here."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    async def _get(self, relative: str, headers: dict[str, str] | None = None
                   ) -> httpx.Response:
        url = f"{self.url}/{quote(relative)}"
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.get(url, headers=headers or {})
        except httpx.HTTPError as exc:
            raise LogStoreUnavailable(
                f"the log store at {self.url} did not answer for {relative}: "
                f"{type(exc).__name__}: {exc}") from None
        if response.status_code in (403, 404):
            raise LogNotFound(f"{relative}: no such log in the log store")
        if response.status_code == 400:
            raise BadLogPath(f"the log store refused {relative!r}: {response.text.strip()[:200]}")
        if response.status_code not in (200, 206, 416):
            raise LogStoreUnavailable(f"the log store at {self.url} answered "
                                      f"{response.status_code} for {relative}")
        return response

    async def read(self, relative: str, offset: int, limit: int = CHUNK) -> LogSlice:
        response = await self._get(relative, {"Range": f"bytes={offset}-{offset + limit - 1}"})
        modified = response.headers.get("Last-Modified")
        mtime = None
        if modified:
            try:
                mtime = email.utils.parsedate_to_datetime(modified).timestamp()
            except (TypeError, ValueError):
                mtime = None
        if response.status_code == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            size = int(match.group(3)) if match else offset + len(response.content)
            return LogSlice(response.content[:limit], offset, size, mtime)
        if response.status_code == 416:  # nothing at or past offset
            size_text = response.headers.get("Content-Range", "").rpartition("/")[2]
            size = int(size_text) if size_text.isdigit() else offset
            return LogSlice(b"", offset, size, mtime)
        body = response.content
        if response.headers.get("Content-Type", "").startswith("text/html") and (
                relative.endswith("/") or not Path(relative).suffix):
            raise LogNotFound(f"{relative} is a directory: add '/' to list it")
        return LogSlice(body[offset:offset + limit], offset, len(body), mtime)

    async def listing(self, relative: str) -> list[Entry]:
        response = await self._get(relative.rstrip("/") + "/")
        parser = _Links()
        parser.feed(response.text)
        entries = []
        for href in parser.hrefs:
            name = unquote(href.split("?")[0].split("#")[0])
            if "/" in name.rstrip("/") or name.startswith((".", "?")) or ":" in name:
                continue  # parent links, absolute links, sort links
            entries.append(Entry(name, None))
        return entries


LogStore = DirectoryStore | HttpStore


def store_for(config: LockmasterConfig) -> LogStore:
    """The store the configuration names (see the module's docstring)."""
    if config.logs.store.driver == "http":
        return HttpStore(config.logs.store.url or config.logs.url)
    return DirectoryStore(config.logs_root)


def age(mtime: float | None) -> float | None:
    return None if mtime is None else max(0.0, time.time() - mtime)
