"""The signature file format, version 1: one YAML file per known bug, named after it.

    version: 1
    bug: https://bugs.launchpad.net/bugs/1253896
    description: SSH to the guest timed out
    files: [job-output.txt]            # globs inside the build's log directory (default)
    regex: 'SSHTimeout: Connection to the .* via SSH timed out'
    projects: [openstack/nova]         # optional scope (fnmatch globs)
    jobs: ['tempest-*']
    results: [FAILURE, TIMED_OUT]      # optional: the failed results it classifies

The signature's name is the file's stem. Everything is checked when the file is loaded: an
unknown key, a missing `bug` or `version`, a regex that does not compile, a file glob that
leaves the log directory: each is an error naming the file, the line and how to fix it.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, ValidationError, field_validator

from lockmaster.config.base import ConfigModel
from lockmaster.config.loader import (
    ConfigError,
    ConfigProblem,
    problems_from_validation,
    read_mapping,
)
from lockmaster.execution.logs import LOG_NAME
from lockmaster.model.build import Result

VERSION = 1
SUFFIXES = (".yaml", ".yml")
# The results a signature classifies unless it says otherwise: every result with a failure's
# log. SUCCESS is never among them (successes are always tried: a match there shows the regex
# is too broad); SKIPPED and ABORTED builds have no log of their own to speak of.
FAILED_RESULTS = (Result.FAILURE, Result.TIMED_OUT, Result.ERROR, Result.NODE_FAILURE,
                  Result.RETRY, Result.RETRY_LIMIT)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


class SignatureError(ConfigError):
    """A signature file that cannot be used; `str()` says what, where (file:line) and the fix."""

    what = "signature"


class Signature(ConfigModel):
    version: int
    bug: str
    regex: str
    files: list[str] = Field(default_factory=lambda: [LOG_NAME], min_length=1)
    description: str | None = None
    projects: list[str] | None = None
    jobs: list[str] | None = None
    results: list[Result] = Field(default_factory=lambda: list(FAILED_RESULTS), min_length=1)

    _name: str = PrivateAttr(default="")  # the file's stem (KnownFailure.signature)
    _pattern: re.Pattern[str] = PrivateAttr()

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != VERSION:
            raise ValueError(f"version {value} is not one this lockmaster reads; write "
                             f"`version: {VERSION}` (the format of docs/signatures.md)")
        return value

    @field_validator("bug")
    @classmethod
    def _bug_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not a bug URL; give the bug's http(s) address, "
                             "e.g. https://bugs.launchpad.net/bugs/1253896")
        return value.strip()

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the regex is empty: it would match every build; write the "
                             "log line that identifies the bug")
        try:
            pattern = re.compile(value, re.MULTILINE)
        except re.error as exc:
            where = f" at position {exc.pos}" if exc.pos is not None else ""
            raise ValueError(f"the regex does not compile: {exc.msg}{where} (Python `re` "
                             "syntax; escape literal characters such as ( [ . * + ? with \\)"
                             ) from None
        if pattern.search(""):
            raise ValueError("the regex matches an empty log: it would match every build; "
                             "make it require some text")
        return value

    @field_validator("files")
    @classmethod
    def _inside(cls, value: list[str]) -> list[str]:
        for glob in value:
            path = PurePosixPath(glob)
            if not glob.strip() or path.is_absolute() or ".." in path.parts or "\\" in glob:
                raise ValueError(
                    f"{glob!r} is not a file inside the build's log directory; give a "
                    f"relative name or glob such as {LOG_NAME!r} or 'logs/*.txt'")
        return value

    @field_validator("results")
    @classmethod
    def _failed(cls, value: list[Result]) -> list[Result]:
        if Result.SUCCESS in value or Result.SKIPPED in value:
            raise ValueError("results lists the failed results the signature classifies: "
                             "SUCCESS and SKIPPED are not failures (successes are always "
                             "tried, to show a signature that is too broad); remove them")
        return value

    def model_post_init(self, context: Any) -> None:
        self._pattern = re.compile(self.regex, re.MULTILINE)

    @property
    def name(self) -> str:
        return self._name

    @property
    def pattern(self) -> re.Pattern[str]:
        return self._pattern

    def applies(self, project: str, job: str, result: Result | None) -> bool:
        """Whether this build is one to try: in scope, and a result it classifies or a success
        (`result` None: any result, as `signatures test` asks)."""
        if self.projects is not None and not _any(project, self.projects):
            return False
        if self.jobs is not None and not _any(job, self.jobs):
            return False
        return result is None or result is Result.SUCCESS or result in self.results


def _any(name: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, glob) for glob in globs)


def _message(err: dict[str, Any]) -> str | None:
    if err["type"] == "missing":
        key = err["loc"][-1] if err["loc"] else "?"
        return {
            "bug": "missing: every signature names its bug (bug: https://...)",
            "regex": "missing: the regular expression to find in the log (regex: '...')",
            "version": f"missing: add `version: {VERSION}` (the format's version)",
        }.get(str(key), "missing")
    return None


def parse_signature(text: str, file: Path | str) -> Signature:
    """Raises SignatureError (every problem, with lines)."""
    name = Path(file).stem
    root, data = read_mapping(text, file, SignatureError,
                              "a signature file is a mapping: version, bug, regex, ...")
    if not _NAME.match(name):
        raise SignatureError(file, [ConfigProblem(
            "", None, f"{name!r} is not a usable signature name (the file's stem): use "
            "letters, digits, '.', '_' and '-', e.g. the bug number: 1253896.yaml")])
    try:
        signature = Signature.model_validate(data)
    except ValidationError as exc:
        problems = problems_from_validation(exc, root, messages=_message)
        for problem in problems:
            if problem.message.startswith("unknown key"):
                problem.message = (f"unknown key (check its spelling); a signature's keys are "
                                   f"{', '.join(Signature.model_fields)}")
        raise SignatureError(file, problems) from None
    signature._name = name
    return signature


def load_signature(path: Path | str) -> Signature:
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise SignatureError(path, [ConfigProblem(
            "", None, "a signature file's name ends in .yaml (e.g. 1253896.yaml)")])
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SignatureError(path, [ConfigProblem("", None, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SignatureError(path, [ConfigProblem("", None, f"cannot read: {exc}")]) from None
    return parse_signature(text, path)


def signature_files(directory: Path) -> list[Path]:
    """The directory's signature files, by name (not recursive: one directory, one bug each)."""
    return sorted(p for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file())


def load_directory(directory: Path) -> tuple[list[Signature], list[SignatureError]]:
    """Every good signature, and an error for each bad file (a name given twice, as x.yaml and
    x.yml, is an error of the second)."""
    signatures: list[Signature] = []
    errors: list[SignatureError] = []
    seen: dict[str, Path] = {}
    for path in signature_files(directory):
        try:
            signature = load_signature(path)
        except SignatureError as exc:
            errors.append(exc)
            continue
        if signature.name in seen:
            errors.append(SignatureError(path, [ConfigProblem(
                "", None, f"signature {signature.name!r} is also defined by "
                f"{seen[signature.name]}; remove one")]))
            continue
        seen[signature.name] = path
        signatures.append(signature)
    return signatures, errors
