"""Where `lockmaster signatures test` reads a stored build's logs: the logs root (driver
directory: the store is a directory on this host) or the log store server over HTTP (driver
http), from the build's log URL. Reads are bounded as on the executor (match.read_bounded)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from lockmaster.config.models import LockmasterConfig
from lockmaster.signatures.match import (
    MAX_FILES_PER_GLOB,
    DirectorySource,
    LogSource,
    bounded_text,
    is_glob,
)

_MAX_LISTED = 2000  # entries of a build's directory tree looked at for a glob over HTTP
_MAX_DEPTH = 4


def glob_regex(glob: str) -> re.Pattern[str]:
    """pathlib's glob over relative POSIX names: `*` and `?` stay in one path component,
    `**/` is any number of directories."""
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:[^/]+/)*", i + 3
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        elif glob[i] == "[":
            end = glob.find("]", i + 1)
            if end < 0:
                out, i = out + re.escape("["), i + 1
            else:
                out, i = out + "[" + glob[i + 1:end].replace("\\", "\\\\") + "]", end + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return re.compile(out + r"\Z")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)


class HttpSource:
    """A build's log directory on a web server that lists directories (the log store server,
    or any web server serving the logs root with listings)."""

    def __init__(self, url: str, client: httpx.Client) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.client = client
        self._listing: list[str] | None = None

    def _list(self) -> list[str]:
        if self._listing is not None:
            return self._listing
        found: list[str] = []
        pending = [("", 0)]
        while pending and len(found) < _MAX_LISTED:
            prefix, depth = pending.pop()
            try:
                response = self.client.get(self.url + prefix)
            except httpx.HTTPError:
                continue
            if response.status_code != 200 or "html" not in response.headers.get(
                    "content-type", ""):
                continue
            parser = _Links()
            parser.feed(response.text)
            for href in parser.links:
                target = urljoin(self.url + prefix, href)
                if not target.startswith(self.url) or target == self.url + prefix:
                    continue  # parent directory, sorting links, other hosts
                name = unquote(urlsplit(target).path[len(urlsplit(self.url).path):])
                if not name or "?" in href:
                    continue
                if name.endswith("/"):
                    if depth + 1 < _MAX_DEPTH:
                        pending.append((name, depth + 1))
                else:
                    found.append(name)
        self._listing = sorted(set(found))
        return self._listing

    def names(self, glob: str) -> list[str]:
        if not is_glob(glob):
            return [glob]  # read() says None when it is not there
        pattern = glob_regex(glob)
        return [name for name in self._list() if pattern.match(name)][:MAX_FILES_PER_GLOB]

    def read(self, name: str, max_bytes: int) -> str | None:
        half = max_bytes // 2
        head = bytearray()
        tail = bytearray()
        total = 0
        try:
            with self.client.stream("GET", self.url + name) as response:
                if response.status_code != 200:
                    return None
                for chunk in response.iter_bytes():
                    total += len(chunk)
                    if len(head) < half:
                        take = half - len(head)
                        head += chunk[:take]
                        chunk = chunk[take:]
                    tail += chunk
                    if len(tail) > max_bytes - half:
                        del tail[:len(tail) - (max_bytes - half)]
        except httpx.HTTPError:
            return None
        if total <= max_bytes:  # all of it fitted: head and tail are the whole file
            return bounded_text(bytes(head), bytes(tail), 0)
        return bounded_text(bytes(head), bytes(tail), total - len(head) - len(tail))


class LogLocator:
    """The LogSource of a stored build, from its log URL and the deployment's log store."""

    def __init__(self, config: LockmasterConfig, client: httpx.Client | None = None) -> None:
        self.config = config
        self.base = config.logs.url.rstrip("/") + "/"
        self.http = config.logs.store.driver == "http"
        self.client = client or httpx.Client(timeout=30.0, follow_redirects=True)

    def source(self, log_url: str | None) -> LogSource | None:
        if not log_url:
            return None
        if self.http:
            return HttpSource(log_url, self.client)
        if not log_url.startswith(self.base):
            return None  # not under logs.url: stored by another deployment
        relative = log_url[len(self.base):].strip("/")
        root = self.config.logs_root.resolve()
        directory = (root / relative).resolve()
        if not relative or not directory.is_relative_to(root) or not directory.is_dir():
            return None
        return DirectorySource(directory)

    def close(self) -> None:
        self.client.close()

