"""Pure helpers of the log viewer: which lines are errors, warnings or debug output, and how a
slice of bytes becomes whole lines.

A job-output.txt line is `<date> <time> | <text>` (execution/logs.py); the severity looks at the
text. A Python traceback is red from "Traceback (most recent call last):" through its indented
frames to the exception line that ends it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \| ")
_ERROR = re.compile(r"\b(?:ERROR|FATAL|CRITICAL)\b|^Traceback \(most recent call last\)|"
                    r"^(?:FAILURE|NODE_FAILURE|RETRY_LIMIT|TIMED_OUT|ABORTED)\b|"
                    r"^RESULT: (?!SUCCESS)")
_WARNING = re.compile(r"\bWARN(?:ING)?\b")
_DEBUG = re.compile(r"\bDEBUG\b")
_TRACEBACK = "Traceback (most recent call last)"

SEVERITIES = ("error", "warning", "debug")


def text_of(line: str) -> str:
    """The line without its timestamp."""
    match = _STAMP.match(line)
    return line[match.end():] if match else line


@dataclass
class Classifier:
    """Gives each line its severity ("error", "warning", "debug" or ""), in order; it remembers
    whether it is inside a traceback."""

    in_traceback: bool = False

    def __call__(self, line: str) -> str:
        text = text_of(line)
        if self.in_traceback:
            if text[:1].isspace() or not text:
                return "error"
            self.in_traceback = False  # the exception line closes the traceback
            return "error"
        if text.startswith(_TRACEBACK):
            self.in_traceback = True
            return "error"
        if _ERROR.search(text):
            return "error"
        if _WARNING.search(text):
            return "warning"
        if _DEBUG.search(text):
            return "debug"
        return ""


@dataclass
class Lines:
    """Whole lines out of a slice: `consumed` bytes made them; `continued` is True when the last
    line is a piece of a line longer than the slice (the next slice goes on with it)."""

    lines: list[str] = field(default_factory=list)
    consumed: int = 0
    continued: bool = False


def split_lines(data: bytes, *, at_end: bool, full: bool) -> Lines:
    """The whole lines in `data`. `at_end`: nothing more will come (the build finished and this
    is the file's end): an unterminated last line counts. `full`: the slice was as long as the
    reader's limit, so a slice without any newline is a piece of a long line and is given as
    such (else a reader would never get past it)."""
    cut = data.rfind(b"\n") + 1
    continued = False
    if at_end:
        cut = len(data)
    elif cut == 0 and full and data:
        cut = _utf8_boundary(data)
        continued = True
    text = data[:cut].decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return Lines(lines, cut, continued)


def _utf8_boundary(data: bytes) -> int:
    """The length of `data` without a multi-byte character cut at its end."""
    end = len(data)
    back = 0
    while back < 4 and end - back - 1 >= 0 and data[end - back - 1] & 0xC0 == 0x80:
        back += 1
    if end - back - 1 >= 0 and data[end - back - 1] >= 0xC0:
        lead = data[end - back - 1]
        need = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        if back + 1 < need:
            return end - back - 1
    return end


# The executor's last words in a job-output.txt (execution/runner.py): after one of these only
# clean-up lines follow (nodes given back, artifacts), then the build's result is reported.
_FINAL = re.compile(r"^(?:RESULT: |NODE_FAILURE: |ABORTED$)")
TAIL = 64 * 1024  # how much of a log's end is looked at for them


def ended(tail: bytes) -> bool:
    """Whether the end of a log (its last TAIL bytes) shows the build finished."""
    text = tail.decode("utf-8", errors="replace")
    return any(_FINAL.match(text_of(line)) for line in text.splitlines())

