"""What the region mirror saga's DNS step and its compensation exchange (issue 17;
activities/dns.py). The DNS server's settings travel as the public `dns:` config: the API key
only by reference (its file's path), read on the worker."""

from __future__ import annotations

from pydantic import Field

from lockmaster.config.dns import DnsConfig
from lockmaster.model.base import Model


class EnsureMirrorDnsRequest(Model):
    dns: DnsConfig
    cloud: str
    region: str
    # The mirror server's addresses: IPv4 become the A rrset, IPv6 the AAAA rrset; a family
    # with no address has its rrset deleted (the name resolves to exactly these).
    addresses: list[str] = Field(min_length=1)


class DeleteMirrorDnsRequest(Model):
    dns: DnsConfig
    cloud: str
    region: str


class MirrorDnsResult(Model):
    name: str  # mirror.<region>.<cloud>.<domain>, no trailing dot
    zone: str
    # The rrsets now in place, by type ("A", "AAAA"); empty after a delete.
    records: dict[str, list[str]] = Field(default_factory=dict)
    changed: bool  # False: nothing was written (already so; or nothing to delete)


class CheckMirrorDnsRequest(Model):
    dns: DnsConfig
    cloud: str
    region: str


class MirrorDnsCheck(Model):
    """Preflight for the DNS step (reads only): can the name be made on this server?"""

    name: str | None  # None: the region or cloud gives no valid DNS name
    zone: str
    problems: list[str] = Field(default_factory=list)  # each: what is wrong and how to fix it
    existing: dict[str, list[str]] = Field(default_factory=dict)  # records already there

    @property
    def ok(self) -> bool:
        return not self.problems
