"""`web:` in lockmaster.yaml: where `lockmaster web` (and `lockmaster run`) serves the status
page and its JSON API (docs/web.md), and the public URL reports link to."""

from __future__ import annotations

from pydantic import Field, model_validator

from lockmaster.config.base import ConfigModel

DEFAULT_PORT = 9000


class WebConfig(ConfigModel):
    listen: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    # The public URL of the web service (behind a proxy: the proxy's); reports to the review
    # system link to <url>/change/<number>. Default: http://<listen>:<port>.
    url: str = ""

    @model_validator(mode="after")
    def _default_url(self) -> WebConfig:
        url = self.url.strip()
        if not url:
            host = "127.0.0.1" if self.listen in ("0.0.0.0", "::", "") else self.listen
            url = f"http://{host}:{self.port}"
        elif not url.startswith(("http://", "https://")):
            raise ValueError(f"web.url {self.url!r} is not an http(s) URL; give e.g. "
                             "https://ci.example.org")
        self.url = url.rstrip("/")
        return self

    def change_url(self, number: int) -> str:
        """A change's entry on the status page (its deep link)."""
        return f"{self.url}/change/{number}"
