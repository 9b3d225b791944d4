"""`dns:` in lockmaster.yaml: the PowerDNS server that holds the region mirrors' names
(issue 17; docs/clouds.md, "DNS records for region mirrors").

    dns:
      api-url: http://127.0.0.1:8081        # PowerDNS's webserver (api=yes, webserver=yes)
      api-key-file: /etc/lockmaster/secrets/pdns-api-key
      zone: example.org                     # must exist on the server; lockmaster never makes it
      domain: ci.example.org                # mirror.<region>.<cloud>.<domain>; default: zone
      server-id: localhost
      ttl: 300

The API key is named by reference (a file, first line) and read by the worker that runs the DNS
activities: it is never in this file, a workflow's input, its history or a log.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from lockmaster.config.base import ConfigModel
from lockmaster.util.dns_names import DnsNameError, check_name, in_zone


class DnsConfig(ConfigModel):
    api_url: str
    # A file whose first line is the API key (relative: to the config file's directory).
    api_key_file: Path
    zone: str
    # The suffix of mirror names; None: the zone itself. Must be inside the zone.
    domain: str | None = None
    server_id: str = Field(default="localhost", min_length=1)
    ttl: int = Field(default=300, ge=1, le=86400)
    timeout: float = Field(default=10.0, gt=0, le=300)

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")) or "@" in url.split("/", 3)[2]:
            raise ValueError(f"dns api-url {url!r}: give the PowerDNS webserver's address as "
                             "http(s)://host:port (no credentials in the URL; the key goes in "
                             "api-key-file)")
        return url.rstrip("/")

    @field_validator("zone", "domain")
    @classmethod
    def _dns_name(cls, name: str | None) -> str | None:
        if name is None:
            return None
        try:
            return check_name(name, "dns zone/domain")
        except DnsNameError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _domain_in_zone(self) -> DnsConfig:
        if self.domain is not None and not in_zone(self.domain, self.zone):
            raise ValueError(f"dns domain {self.domain!r} is not inside zone {self.zone!r}: "
                             f"use a domain ending in .{self.zone}, or leave it out")
        return self

    @property
    def mirror_domain(self) -> str:
        return self.domain or self.zone

    def resolved(self, base: Path | None) -> DnsConfig:
        """A copy with api-key-file absolute (relative paths are from `base`, the config
        file's directory): the activity reads it on a worker with another working directory."""
        if base is None or self.api_key_file.is_absolute():
            return self
        return self.model_copy(update={"api_key_file": base / self.api_key_file})


def read_api_key(path: Path) -> str:
    """The key from its file (first line), or a clear error naming the file (never the key)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"dns api-key-file {path}: cannot read it ({exc.strerror}); create it "
                         "with the PowerDNS server's api-key on its first line") from None
    key = text.splitlines()[0].strip() if text.strip() else ""
    if not key:
        raise ValueError(f"dns api-key-file {path} is empty: put the PowerDNS server's api-key "
                         "on its first line")
    return key
