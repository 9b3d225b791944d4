"""Serve the log storage directory over HTTP, so the log URLs in reports work; with a token, also
take the executors' uploads into it: the log store (docs/design.md, "Logs in one store").

GET and HEAD serve the files (text logs as text/plain so browsers show them); a GET with
`Range: bytes=<first>-[<last>]` gets that slice of a file (206; 416 past its end), so a
reader can tail a growing log by offset. With a token file:
- `PUT /<path>` with `Authorization: Bearer <token>` and a Content-Length stores the body at
  <root>/<path>, atomically (a temporary file beside it, then a rename): readers see the old
  file or the new one, never half of it. Putting the same file again replaces it (idempotent).
- `PUT /<path>` with `Content-Range: bytes <offset>-<last>/*` appends the body if the file is
  exactly <offset> bytes long (a missing file is 0 bytes): how a running job's log grows in the
  store. Otherwise 409, with the file's size in `X-Log-Size`: the sender puts the whole file.
- `DELETE /<dir>/` removes a directory tree (an earlier try's artifacts); a missing one is fine.
Refused, with a text/plain reason: no or a wrong token (401), a server that takes no uploads
(403), a path that is not a plain relative file path inside the root (400), no Content-Length
(411), a body over the limit (413).

Any web server pointed at the logs root serves the logs as well; uploads need this one.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import os
import re
import shutil
import tempfile
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

# One upload: artifacts are capped per build at 512 MiB (execution/artifacts.MAX_BYTES).
MAX_UPLOAD = 512 * 2**20
_RANGE = re.compile(r"bytes (\d+)-(\d+|\*)/(\d+|\*)\Z")
_GET_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_CHUNK = 1 << 20
TEMP_PREFIX = ".upload-"  # temporary files of uploads under way; never served as logs


class TokenError(Exception):
    """The token file cannot be used; the message says which file and how to fix it."""


def read_token(path: Path) -> str:
    """The bearer token in `path` (its first line, stripped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenError(
            f"the log store's token file {path} cannot be read ({exc.strerror or exc}): put "
            "the token (one line) in it, readable by the user lockmaster runs as, or fix "
            "logs.store.token-file") from None
    except UnicodeDecodeError:
        raise TokenError(f"the log store's token file {path} is not UTF-8 text") from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise TokenError(f"the log store's token file {path} is empty: put the token (one "
                         "line) in it")
    return token


def _relative(raw: str) -> str | None:
    """The request path as a relative path inside the root, or None when it is not a plain one
    (absolute after decoding, `.`/`..` or empty segments, NUL or backslash)."""
    path = unquote(urlsplit(raw).path)
    if not path.startswith("/") or "\0" in path or "\\" in path:
        return None
    parts = path[1:].split("/")
    trailing = parts[-1] == ""
    if trailing:
        parts = parts[:-1]
    if not parts or any(part in ("", ".", "..") for part in parts):
        return None
    return "/".join(parts) + ("/" if trailing else "")


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".txt": "text/plain; charset=utf-8",
        ".log": "text/plain; charset=utf-8",
    }
    token_file: Path | None = None
    max_upload: int = MAX_UPLOAD

    def log_message(self, format: str, *args: object) -> None:
        return  # quiet: request logs would drown the worker's own output

    def _answer(self, status: HTTPStatus, text: str, headers: dict[str, str] | None = None
                ) -> None:
        body = (text.rstrip("\n") + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status >= 400 and not self._drained():
            # A large unread body: the connection cannot be reused.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    _consumed = False  # the body was read
    _started = False  # reading the body began

    def _drained(self) -> bool:
        """Read a refused request's body (when small) so that the sender sees the answer."""
        if self._consumed or self.command not in ("PUT", "POST"):
            return True
        if self._started:  # stopped half way: the rest cannot be found
            return False
        text = self.headers.get("Content-Length", "")
        if not text.isdigit() or int(text) > 4 * _CHUNK:
            return False
        with contextlib.suppress(OSError):
            self.rfile.read(int(text))
        self._consumed = True
        return True

    def _allowed(self) -> bool:
        if self.token_file is None:
            self._answer(HTTPStatus.FORBIDDEN,
                         "this log server takes no uploads: it was started without a token "
                         "(logs.store.token-file, driver http)")
            return False
        try:
            token = read_token(self.token_file)
        except TokenError as exc:
            self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, f"uploads are unavailable: {exc}")
            return False
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), token.encode()):
            why = "no bearer token" if not given else "the bearer token is wrong"
            self._answer(HTTPStatus.UNAUTHORIZED,
                         f"{why}: uploads need 'Authorization: Bearer <token>' with the token "
                         "in the log store's logs.store.token-file",
                         {"WWW-Authenticate": 'Bearer realm="lockmaster logs"'})
            return False
        return True

    def _target(self, *, directory: bool) -> tuple[str, Path] | None:
        relative = _relative(self.path)
        if relative is None or relative.endswith("/") != directory:
            what = "a directory path ending in /" if directory else "a file path"
            self._answer(HTTPStatus.BAD_REQUEST,
                         f"refused: {self.path!r} is not {what} inside the log store (no '.', "
                         "'..', empty segments, backslashes or NUL)")
            return None
        root = Path(self.directory).resolve()
        target = root / relative.rstrip("/")
        # A link inside the root must not lead the write outside it.
        if not target.parent.resolve().is_relative_to(root) or (
                target.is_symlink() or (target.exists() and not target.resolve().is_relative_to(
                    root))):
            self._answer(HTTPStatus.BAD_REQUEST,
                         f"refused: {self.path!r} leads outside the log store")
            return None
        return relative, target

    def do_GET(self) -> None:
        # A byte range of a file (the web's log viewer tails a running log by offset): 206
        # with that slice. Other Range forms (suffixes, several ranges) get the whole file.
        spec = _GET_RANGE.fullmatch(self.headers.get("Range", "").strip())
        if spec is None or not self._send_range(int(spec.group(1)), spec.group(2)):
            super().do_GET()

    def _send_range(self, first: int, last_text: str) -> bool:
        """Answered with 206 or 416; False when it is not a plain file (GET decides)."""
        path = Path(self.translate_path(self.path))
        if self.path.split("?")[0].endswith("/") or not path.is_file():
            return False
        try:
            source = path.open("rb")
        except OSError:
            return False
        with source:
            stat = os.fstat(source.fileno())
            size = stat.st_size
            if first >= size:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return True
            last = min(int(last_text), size - 1) if last_text else size - 1
            if last < first:
                return False
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Type", self.guess_type(str(path)))
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.send_header("Content-Length", str(last - first + 1))
            self.send_header("Last-Modified", self.date_time_string(int(stat.st_mtime)))
            self.end_headers()
            source.seek(first)
            remaining = last - first + 1
            while remaining:
                chunk = source.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
        return True

    def do_PUT(self) -> None:
        if not self._allowed():
            return
        found = self._target(directory=False)
        if found is None:
            return
        relative, target = found
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self._answer(HTTPStatus.LENGTH_REQUIRED,
                         "an upload needs a Content-Length (chunked bodies are not taken)")
            return
        length = int(length_text)
        if length > self.max_upload:
            self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                         f"{length} bytes is over this log store's limit of {self.max_upload}")
            return
        if target.is_dir():
            self._answer(HTTPStatus.CONFLICT, f"{relative} is a directory in the log store")
            return
        content_range = self.headers.get("Content-Range")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if content_range is None:
                self._replace(target, length)
                self._answer(HTTPStatus.CREATED, f"stored {relative} ({length} bytes)")
                return
            match = _RANGE.match(content_range.strip())
            if match is None:
                self._answer(HTTPStatus.BAD_REQUEST,
                             f"Content-Range {content_range!r}: expected 'bytes <first>-<last>/*'")
                return
            self._append(relative, target, int(match.group(1)), length)
        except OSError as exc:
            self._answer(HTTPStatus.INSUFFICIENT_STORAGE if exc.errno == 28
                         else HTTPStatus.INTERNAL_SERVER_ERROR,
                         f"the log store could not store {relative}: {exc.strerror or exc}")

    def _copy_body(self, out: object, length: int) -> None:
        self._started = True
        remaining = length
        while remaining:
            chunk = self.rfile.read(min(_CHUNK, remaining))
            if not chunk:
                raise ConnectionError("the upload ended early")
            out.write(chunk)  # type: ignore[attr-defined]
            remaining -= len(chunk)
        self._consumed = True

    def _replace(self, target: Path, length: int) -> None:
        fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                self._copy_body(out, length)
            os.chmod(temp, 0o644)
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def _append(self, relative: str, target: Path, offset: int, length: int) -> None:
        with _append_lock:  # the size check and the write, together
            size = target.stat().st_size if target.exists() else 0
            if size != offset:
                self._answer(HTTPStatus.CONFLICT,
                             f"{relative} holds {size} bytes, not {offset}: put the whole file",
                             {"X-Log-Size": str(size)})
                return
            with target.open("ab") as out:
                self._copy_body(out, length)
        self._answer(HTTPStatus.OK, f"appended {length} bytes to {relative}",
                     {"X-Log-Size": str(offset + length)})

    def do_DELETE(self) -> None:
        if not self._allowed():
            return
        found = self._target(directory=True)
        if found is None:
            return
        relative, target = found
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        self._answer(HTTPStatus.OK, f"removed {relative}")


_append_lock = threading.Lock()


class LogServer:
    """`token_file`: take authenticated uploads into `root` (None: serve only)."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 8000,
                 token_file: Path | None = None, max_upload: int = MAX_UPLOAD) -> None:
        root.mkdir(parents=True, exist_ok=True)
        if token_file is not None:
            read_token(token_file)  # an unusable token file: TokenError now, not per upload
        handler_class = type("LogHandler", (_Handler,),
                             {"token_file": token_file, "max_upload": max_upload})
        handler = functools.partial(handler_class, directory=str(root))
        self.root = root
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> LogServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
