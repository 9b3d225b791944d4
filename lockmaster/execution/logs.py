"""A build's job-output.txt: appended as output arrives, one timestamp per line (as Zuul does)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TextIO

from lockmaster.execution.secrets import mask
from lockmaster.model.change import ChangeRef

LOG_NAME = "job-output.txt"


def build_log_path(pipeline: str, change: ChangeRef, job: str, build_id: str) -> str:
    """Zuul's log layout: <NN>/<change>/<patchset>/<pipeline>/<job>/<build id prefix>."""
    return (f"{change.number % 100:02d}/{change.number}/{change.patchset}/{pipeline}/{job}/"
            f"{build_id[:7]}")


def log_url(logs_url: str, log_path: str) -> str:
    """The public URL of a build's log directory: `<logs_url>/<log_path>/`."""
    return f"{logs_url.rstrip('/')}/{log_path.strip('/')}/"


def log_dir(logs_root: Path, log_path: str) -> Path:
    """Where `log_path` lives under `logs_root`; refuses paths that would leave the root."""
    root = logs_root.resolve()
    directory = (root / log_path.strip("/")).resolve()
    if not directory.is_relative_to(root) or directory == root:
        raise ValueError(f"log path {log_path!r} is not a directory inside {root}")
    return directory


def _stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")


class LogWriter:
    """Writes `<logs_root>/<log_path>/job-output.txt`; `write` is an OutputSink.

    Each chunk is flushed at once so the log can be read (and served) while the job runs.
    Opening truncates: a retried activity writing the same log_path starts the file anew.
    """

    def __init__(self, logs_root: Path, log_path: str) -> None:
        self.path = log_dir(logs_root, log_path) / LOG_NAME
        self._file: TextIO | None = None
        # Output arrives in arbitrary chunks: only stamp where a line really starts.
        self._at_line_start = True
        self._secrets: list[str] = []  # values masked wherever a chunk contains them whole

    def open(self) -> LogWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8", errors="replace")
        self._at_line_start = True
        return self

    def close(self) -> None:
        if self._file is not None:
            if not self._at_line_start:
                self._file.write("\n")
                self._at_line_start = True
            self._file.close()
            self._file = None

    def __enter__(self) -> LogWriter:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def redact(self, value: str) -> None:
        """From now on, write `value` (a secret the job got) as ********."""
        if value and value not in self._secrets:
            self._secrets.append(value)

    def write_sync(self, text: str) -> None:
        if self._file is None:
            raise RuntimeError("LogWriter is not open")
        if not text:
            return
        if self._secrets:
            text = mask(text, self._secrets)
        stamp = _stamp()
        parts: list[str] = []
        # Split on "\n" only: "\r" progress bars and form feeds stay inside their line.
        pieces = text.split("\n")
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            if last and not piece:
                break  # the text ended with a newline
            if self._at_line_start:
                parts.append(f"{stamp} | ")
            parts.append(piece if last else piece + "\n")
            self._at_line_start = not last
        self._file.write("".join(parts))
        self._file.flush()

    async def write(self, text: str) -> None:
        # Small appends to a local file: not worth a thread hop per chunk.
        self.write_sync(text)

    def line(self, text: str) -> None:
        """Write `text` as whole line(s), ending any partial line the job left open."""
        if not self._at_line_start:
            self.write_sync("\n")
        self.write_sync(text if text.endswith("\n") else text + "\n")
