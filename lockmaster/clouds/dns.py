"""DNS records through PowerDNS's Authoritative HTTP API (issue 17: the region mirror's name).

Seed 004: "an infra-root member will need to make the region-local mirror server ... and setup
DNS" by hand. Here the mirror saga's step makes `mirror.<region>.<cloud>.<domain>` through the
API and its compensation deletes it. Both are idempotent: ensure_record reads the rrset first and
writes only when it differs (REPLACE), delete_record is a DELETE, which PowerDNS accepts for an
rrset that is absent.

The API key is given by the caller (read from the file the configuration names); it goes only
into the X-API-Key header and never into a message, a repr or a log line.

The name helpers are pure, in lockmaster/util/dns_names.py (re-exported here).
"""

from __future__ import annotations

from types import TracebackType
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from lockmaster.util.dns_names import (
    DnsError,
    DnsNameError,
    absolute,
    check_name,
    check_record,
    in_zone,
    mirror_name,
)

DEFAULT_TIMEOUT = 10.0  # seconds per HTTP request


__all__ = [
    "DnsApiError",
    "DnsAuthError",
    "DnsError",
    "DnsNameError",
    "DnsRecord",
    "DnsUnavailable",
    "DnsZoneMissing",
    "EnsureResult",
    "PowerDnsClient",
    "mirror_name",
]


class DnsZoneMissing(DnsError):
    """The zone is not on the server (lockmaster does not create zones: the operator does)."""


class DnsAuthError(DnsError):
    """The server refused the API key."""


class DnsApiError(DnsError):
    """The server refused or failed a request; `status` is its HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = status >= 500


class DnsUnavailable(DnsError):
    """The server did not answer (connection refused, timeout): worth retrying."""

    retryable = True


class DnsRecord(BaseModel):
    """One rrset: every record of one name and type."""

    name: str  # absolute, with the trailing dot
    type: str
    ttl: int
    contents: list[str]  # sorted


class EnsureResult(BaseModel):
    record: DnsRecord
    changed: bool  # False: the rrset was already exactly this (nothing written)


# --- the client ---------------------------------------------------------------------------------


class PowerDnsClient:
    """An async client for one PowerDNS server's API (`api_url`: http://host:port, the
    webserver's address; `server_id`: "localhost" for the server itself)."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        server_id: str = "localhost",
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.server_id = server_id
        self._http = httpx.AsyncClient(
            base_url=f"{self.api_url}/api/v1/servers/{quote(server_id, safe='')}",
            headers={"X-API-Key": api_key, "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:  # never the key
        return f"PowerDnsClient({self.api_url!r}, server_id={self.server_id!r})"

    async def __aenter__(self) -> PowerDnsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _zone_path(self, zone: str) -> str:
        return f"/zones/{quote(absolute(zone), safe='')}"

    async def _request(
        self,
        method: str,
        path: str,
        doing: str,
        zone: str,
        json: object | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = await self._http.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise DnsUnavailable(
                f"{doing}: PowerDNS API at {self.api_url} did not answer "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if response.status_code in (401, 403):
            raise DnsAuthError(
                f"{doing}: PowerDNS API at {self.api_url} refused the API key "
                f"({response.status_code} {_message(response)}): the key file must hold the "
                "server's api-key setting"
            )
        if response.status_code == 404:
            # A missing server id and a missing zone both answer 404; say which.
            if not await self._server_exists():
                raise DnsApiError(
                    f"{doing}: PowerDNS at {self.api_url} has no server "
                    f'{self.server_id!r} (use "localhost")',
                    404,
                )
            z = check_name(zone, "zone")
            raise DnsZoneMissing(
                f"{doing}: zone {z!r} does not exist on PowerDNS at {self.api_url}: create it "
                f"first (`pdnsutil create-zone {z} <nameserver>`, or POST "
                f"/api/v1/servers/{self.server_id}/zones); lockmaster does not create zones"
            )
        if response.status_code >= 400:
            raise DnsApiError(
                f"{doing}: PowerDNS answered {response.status_code}: {_message(response)}",
                response.status_code,
            )
        return response

    async def _server_exists(self) -> bool:
        try:
            # Absolute: base_url + "" would end in a slash, which PowerDNS answers with 404.
            response = await self._http.get(
                f"{self.api_url}/api/v1/servers/{quote(self.server_id, safe='')}")
        except httpx.HTTPError:
            return True  # cannot tell: blame the zone, the likelier case
        return response.status_code != 404

    async def zone_exists(self, zone: str) -> bool:
        try:
            await self._request(
                "GET",
                self._zone_path(zone),
                f"reading zone {zone}",
                zone,
                params={"rrsets": "false"},
            )
        except DnsZoneMissing:
            return False
        return True

    async def get_record(self, zone: str, name: str, type_: str) -> DnsRecord | None:
        """The rrset of `name` and `type_`, or None when there is none. DnsZoneMissing when the
        zone is not on the server."""
        fqdn = absolute(name)
        # rrset_name/rrset_type filter on PowerDNS 4.8+; older servers send the whole zone,
        # filtered here either way.
        response = await self._request(
            "GET",
            self._zone_path(zone),
            f"reading {fqdn} {type_}",
            zone,
            params={"rrset_name": fqdn, "rrset_type": type_},
        )
        for rrset in response.json().get("rrsets", []):
            if rrset.get("name") == fqdn and rrset.get("type") == type_:
                contents = sorted(
                    r["content"] for r in rrset.get("records", []) if not r.get("disabled")
                )
                if contents:
                    return DnsRecord(
                        name=fqdn, type=type_, ttl=rrset.get("ttl", 0), contents=contents
                    )
        return None

    async def ensure_record(
        self, zone: str, name: str, type_: str, contents: list[str], ttl: int
    ) -> EnsureResult:
        """Make the rrset exactly `contents` with `ttl` (idempotent: no write when it is)."""
        check_record(zone, name, type_, contents, ttl)
        fqdn = absolute(name)
        wanted = DnsRecord(name=fqdn, type=type_, ttl=ttl, contents=sorted(set(contents)))
        if await self.get_record(zone, name, type_) == wanted:
            return EnsureResult(record=wanted, changed=False)
        rrset = {
            "name": fqdn,
            "type": type_,
            "ttl": ttl,
            "changetype": "REPLACE",
            "records": [{"content": c, "disabled": False} for c in wanted.contents],
        }
        await self._request(
            "PATCH",
            self._zone_path(zone),
            f"setting {fqdn} {type_} in zone {zone}",
            zone,
            json={"rrsets": [rrset]},
        )
        return EnsureResult(record=wanted, changed=True)

    async def delete_record(self, zone: str, name: str, type_: str) -> bool:
        """Delete the rrset; True when there was one. An absent rrset is fine (a compensation
        that runs twice, or after a step that never made it)."""
        if not in_zone(name, zone):
            raise DnsNameError(f"record {name!r} is not in zone {zone!r}")
        fqdn = absolute(name)
        existed = await self.get_record(zone, name, type_) is not None
        if existed:
            await self._request(
                "PATCH",
                self._zone_path(zone),
                f"deleting {fqdn} {type_} from zone {zone}",
                zone,
                json={"rrsets": [{"name": fqdn, "type": type_, "changetype": "DELETE"}]},
            )
        return existed


def _message(response: httpx.Response) -> str:
    """The server's own words: PowerDNS answers {"error": "..."}, or plain text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])[:500]
    return response.text.strip()[:500]
