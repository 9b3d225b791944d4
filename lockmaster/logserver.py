"""Serve the log storage directory over HTTP, so the log URLs in reports work.

Any web server pointed at the logs root does the same job in production; this one is for
development and small deployments. Text logs are served as text/plain so browsers show them.
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".txt": "text/plain; charset=utf-8",
        ".log": "text/plain; charset=utf-8",
    }

    def log_message(self, format: str, *args: object) -> None:
        return  # quiet: request logs would drown the worker's own output


class LogServer:
    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
        root.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_Handler, directory=str(root))
        self.httpd = ThreadingHTTPServer((host, port), handler)
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
