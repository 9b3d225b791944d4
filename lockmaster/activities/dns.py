"""The region mirror saga's DNS step and its compensation (issue 17; docs/clouds.md):
`ensure_mirror_dns` makes `mirror.<region>.<cloud>.<domain>` resolve to exactly the mirror's
addresses, `delete_mirror_dns` removes the name. Both are idempotent: a retried or repeated
call writes nothing when the records are already so, and deleting what is absent succeeds.

The API key is read here, on the worker, from the file the `dns:` config names; it is not in
the request, the result, a log line or an error message. Errors that retrying cannot fix (a
bad name, a missing zone, a refused key, an unreadable key file) are non-retryable, with the
client's message (what, which record, the server's words); a server that does not answer is
retried by Temporal's policy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from lockmaster.clouds.dns import DnsError, PowerDnsClient
from lockmaster.config.dns import DnsConfig, read_api_key
from lockmaster.model.dns import (
    CheckMirrorDnsRequest,
    DeleteMirrorDnsRequest,
    EnsureMirrorDnsRequest,
    MirrorDnsCheck,
    MirrorDnsResult,
)
from lockmaster.util.dns_names import address_type, mirror_name

log = logging.getLogger(__name__)

ADDRESS_TYPES = ("A", "AAAA")

ClientFactory = Callable[[DnsConfig], PowerDnsClient]


def client_for(config: DnsConfig) -> PowerDnsClient:
    """A client for the configured server, its key read from the key file now."""
    try:
        key = read_api_key(config.api_key_file)
    except ValueError as exc:
        raise ApplicationError(str(exc), type="DnsKeyFileError", non_retryable=True) from None
    return PowerDnsClient(config.api_url, key, server_id=config.server_id,
                          timeout=config.timeout)


def split_addresses(addresses: list[str]) -> dict[str, list[str]]:
    """{"A": [...IPv4], "AAAA": [...IPv6]}, each sorted and without duplicates; DnsNameError
    for anything that is not an IP address."""
    by_type: dict[str, set[str]] = {t: set() for t in ADDRESS_TYPES}
    for address in addresses:
        by_type[address_type(address)].add(address)
    return {t: sorted(v) for t, v in by_type.items()}


def _application_error(exc: DnsError) -> ApplicationError:
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=not exc.retryable)


class DnsActivities:
    """`client_factory`: how a client is made from the config (tests may pass another)."""

    def __init__(self, client_factory: ClientFactory = client_for) -> None:
        self._client_factory = client_factory

    @activity.defn(name="ensure_mirror_dns")
    async def ensure_mirror_dns(self, request: EnsureMirrorDnsRequest) -> MirrorDnsResult:
        dns = request.dns
        try:
            name = mirror_name(request.region, request.cloud, dns.mirror_domain)
            wanted = split_addresses(request.addresses)
        except DnsError as exc:
            raise _application_error(exc) from None
        changed = False
        records: dict[str, list[str]] = {}
        async with self._client_factory(dns) as client:
            try:
                for type_ in ADDRESS_TYPES:
                    if wanted[type_]:
                        result = await client.ensure_record(dns.zone, name, type_,
                                                            wanted[type_], dns.ttl)
                        changed |= result.changed
                        records[type_] = result.record.contents
                    else:  # a family the mirror no longer has: its old rrset goes
                        changed |= await client.delete_record(dns.zone, name, type_)
            except DnsError as exc:
                raise _application_error(exc) from None
        if changed:
            log.info("mirror DNS: %s -> %s (zone %s)", name, records, dns.zone)
        return MirrorDnsResult(name=name, zone=dns.zone, records=records, changed=changed)

    @activity.defn(name="delete_mirror_dns")
    async def delete_mirror_dns(self, request: DeleteMirrorDnsRequest) -> MirrorDnsResult:
        dns = request.dns
        try:
            name = mirror_name(request.region, request.cloud, dns.mirror_domain)
        except DnsError as exc:
            raise _application_error(exc) from None
        changed = False
        async with self._client_factory(dns) as client:
            try:
                for type_ in ADDRESS_TYPES:
                    changed |= await client.delete_record(dns.zone, name, type_)
            except DnsError as exc:
                raise _application_error(exc) from None
        if changed:
            log.info("mirror DNS: %s deleted (zone %s)", name, dns.zone)
        return MirrorDnsResult(name=name, zone=dns.zone, records={}, changed=changed)

    @activity.defn(name="check_mirror_dns")
    async def check_mirror_dns(self, request: CheckMirrorDnsRequest) -> MirrorDnsCheck:
        """Preflight, before anything is created: the name is valid, the key file readable,
        the server answers and takes the key, the zone exists. Reads only; every problem is
        reported (not raised), so the preflight report lists them all at once. Records already
        at the name are reported too (another region's, or a previous attempt's)."""
        dns = request.dns
        check = MirrorDnsCheck(name=None, zone=dns.zone)
        try:
            check.name = mirror_name(request.region, request.cloud, dns.mirror_domain)
        except DnsError as exc:
            check.problems.append(str(exc))
        try:
            client = client_for(dns)
        except ApplicationError as exc:
            check.problems.append(str(exc))
            return check
        async with client:
            try:
                if not await client.zone_exists(dns.zone):
                    check.problems.append(
                        f"zone {dns.zone!r} does not exist on PowerDNS at {dns.api_url}: create "
                        f"it (`pdnsutil create-zone {dns.zone} <nameserver>`); lockmaster does "
                        "not create zones")
                elif check.name is not None:
                    for type_ in ADDRESS_TYPES:
                        record = await client.get_record(dns.zone, check.name, type_)
                        if record is not None:
                            check.existing[type_] = record.contents
            except DnsError as exc:
                check.problems.append(str(exc))
        return check

    def all(self) -> list[Callable[..., object]]:
        return [self.ensure_mirror_dns, self.delete_mirror_dns, self.check_mirror_dns]
