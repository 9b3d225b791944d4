"""`results:` in lockmaster.yaml: where every build and buildset is recorded (docs/results.md).

The URL is SQLAlchemy's: `sqlite:///<path>` (the embedded default, `<state-dir>/results.db`) or
`postgresql+psycopg://user@host:5432/lockmaster_results` (psycopg 3). The password is never
written in the URL here: `password-file` names a file holding it, read when the database is
opened, so config dumps and workflow histories show only the file's name.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from lockmaster.config.base import ConfigModel

SCHEMES = ("sqlite", "postgresql")


class ResultsConfig(ConfigModel):
    # None: sqlite:///<state-dir>/results.db. A relative SQLite path is relative to the config.
    url: str | None = None
    # PostgreSQL: a file holding the password (relative to the config file).
    password_file: Path | None = None
    # Off: builds are not recorded (recording says so once in the log); the CLI refuses.
    enabled: bool = True
    # Connections the orchestrator's recording activities may hold open (PostgreSQL).
    pool_size: int = Field(default=5, ge=1, le=100)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        if "://" not in url or scheme not in SCHEMES:
            raise ValueError(
                f"results url {redact(url)!r} is not a database URL this supports: use "
                "sqlite:///<path> or postgresql+psycopg://<user>@<host>:<port>/<database>")
        return url

    @model_validator(mode="after")
    def _no_password_in_url(self) -> ResultsConfig:
        if self.url is not None and _has_password(self.url):
            raise ValueError(
                "results url carries a password in clear text: remove it from the URL and put "
                "it in a file named by password-file (only that file's name is ever shown)")
        if self.password_file is not None and (
                self.url is None or not self.url.startswith("postgresql")):
            raise ValueError("results password-file is for a postgresql url; remove it, or set "
                             "url: postgresql+psycopg://<user>@<host>:<port>/<database>")
        return self


def _has_password(url: str) -> bool:
    rest = url.split("://", 1)[1]
    userinfo = rest.split("@", 1)[0] if "@" in rest.split("/", 1)[0] else ""
    return ":" in userinfo


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    host_part = rest.split("/", 1)[0]
    if "@" not in host_part:
        return url
    userinfo, tail = rest.split("@", 1)
    if ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{tail}"
