"""DNS records for region mirrors against a REAL PowerDNS (tests/fixtures/pdns.py), resolved by a
real resolver (dnspython, pointed at the test server's DNS port): the client and the
ensure_mirror_dns / delete_mirror_dns activities."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import dns.exception
import dns.rdatatype
import dns.resolver
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from lockmaster.activities.dns import DnsActivities
from lockmaster.clouds.dns import (
    DnsAuthError,
    DnsNameError,
    DnsUnavailable,
    DnsZoneMissing,
    PowerDnsClient,
)
from lockmaster.config.dns import DnsConfig
from lockmaster.model.dns import (
    CheckMirrorDnsRequest,
    DeleteMirrorDnsRequest,
    EnsureMirrorDnsRequest,
)
from tests.fixtures.pdns import PdnsServer, pdns_server  # noqa: F401 (a fixture)
from tests.ports import free_port


def resolve(server: PdnsServer, name: str, type_: str) -> list[str]:
    """What a real resolver gets from the server (empty: the name has no such record)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.dns_port
    resolver.lifetime = 5.0
    try:
        answer = resolver.resolve(name, dns.rdatatype.from_text(type_))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return sorted(r.to_text() for r in answer)


def unique(label: str = "r") -> str:
    """A region label of its own per test (the server is shared by this module)."""
    return f"{label}{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def dns_client(pdns_server: PdnsServer) -> AsyncIterator[PowerDnsClient]:  # noqa: F811
    async with PowerDnsClient(pdns_server.api_url, pdns_server.api_key) as c:
        yield c


def config_for(server: PdnsServer, **changes: object) -> DnsConfig:
    data = {"api-url": server.api_url, "api-key-file": str(server.api_key_file),
            "zone": server.zone, "ttl": 60, **changes}
    return DnsConfig.model_validate(data)


# --- the client ---------------------------------------------------------------------------------

async def test_ensure_is_idempotent_and_resolves(pdns_server: PdnsServer,  # noqa: F811
                                                 dns_client: PowerDnsClient) -> None:
    name = f"mirror.{unique()}.ovh.{pdns_server.zone}"
    assert resolve(pdns_server, name, "A") == []
    first = await dns_client.ensure_record(pdns_server.zone, name, "A", ["192.0.2.10"], 60)
    assert first.changed
    assert resolve(pdns_server, name, "A") == ["192.0.2.10"]
    again = await dns_client.ensure_record(pdns_server.zone, name, "A", ["192.0.2.10"], 60)
    assert not again.changed
    record = await dns_client.get_record(pdns_server.zone, name, "A")
    assert record is not None and record.contents == ["192.0.2.10"] and record.ttl == 60
    # A different address replaces (not adds to) the rrset.
    moved = await dns_client.ensure_record(pdns_server.zone, name, "A", ["192.0.2.11"], 60)
    assert moved.changed
    assert resolve(pdns_server, name, "A") == ["192.0.2.11"]
    # A different TTL alone is a change too.
    longer = await dns_client.ensure_record(pdns_server.zone, name, "A", ["192.0.2.11"], 120)
    assert longer.changed
    record = await dns_client.get_record(pdns_server.zone, name, "A")
    assert record is not None and record.ttl == 120


async def test_delete_and_delete_again(pdns_server: PdnsServer,  # noqa: F811
                                       dns_client: PowerDnsClient) -> None:
    name = f"mirror.{unique()}.ovh.{pdns_server.zone}"
    await dns_client.ensure_record(pdns_server.zone, name, "AAAA", ["2001:db8::10"], 60)
    assert resolve(pdns_server, name, "AAAA") == ["2001:db8::10"]
    assert await dns_client.delete_record(pdns_server.zone, name, "AAAA") is True
    assert resolve(pdns_server, name, "AAAA") == []
    assert await dns_client.get_record(pdns_server.zone, name, "AAAA") is None
    # Absent is fine: a compensation may run twice.
    assert await dns_client.delete_record(pdns_server.zone, name, "AAAA") is False


async def test_missing_zone_names_it_and_how_to_create_it(pdns_server: PdnsServer,  # noqa: F811
                                                          dns_client: PowerDnsClient) -> None:
    with pytest.raises(DnsZoneMissing) as caught:
        await dns_client.ensure_record("absent.example", "mirror.r1.ovh.absent.example", "A",
                                   ["192.0.2.1"], 60)
    message = str(caught.value)
    assert "zone 'absent.example' does not exist" in message
    assert "pdnsutil create-zone absent.example" in message
    assert not await dns_client.zone_exists("absent.example")
    assert await dns_client.zone_exists(pdns_server.zone)


async def test_bad_api_key_is_a_clear_error_without_the_key(
        pdns_server: PdnsServer) -> None:  # noqa: F811
    wrong = "wrong-key-" + uuid.uuid4().hex
    name = f"mirror.{unique()}.ovh.{pdns_server.zone}"
    async with PowerDnsClient(pdns_server.api_url, wrong) as bad:
        with pytest.raises(DnsAuthError) as caught:
            await bad.ensure_record(pdns_server.zone, name, "A", ["192.0.2.1"], 60)
        assert wrong not in repr(bad)
    message = str(caught.value)
    assert "refused the API key" in message and "401" in message
    assert wrong not in message and pdns_server.api_key not in message
    assert resolve(pdns_server, name, "A") == []  # nothing was made


async def test_server_message_is_passed_on(pdns_server: PdnsServer,  # noqa: F811
                                           dns_client: PowerDnsClient) -> None:
    name = f"mx.{unique()}.{pdns_server.zone}"
    with pytest.raises(Exception) as caught:
        await dns_client.ensure_record(pdns_server.zone, name, "MX", ["not-an-mx"], 60)
    message = str(caught.value)
    assert f"setting {name}. MX in zone {pdns_server.zone}" in message
    assert "PowerDNS answered 422" in message and "not-an-mx" in message


async def test_bad_names_are_refused_before_sending(pdns_server: PdnsServer,  # noqa: F811
                                                    dns_client: PowerDnsClient) -> None:
    with pytest.raises(DnsNameError, match="not in zone"):
        await dns_client.ensure_record(pdns_server.zone, "mirror.r1.ovh.example.com", "A",
                                   ["192.0.2.1"], 60)
    with pytest.raises(DnsNameError, match="use only a-z"):
        await dns_client.ensure_record(pdns_server.zone, f"mirror.r_1.{pdns_server.zone}", "A",
                                   ["192.0.2.1"], 60)


async def test_server_down_is_retryable() -> None:
    async with PowerDnsClient(f"http://127.0.0.1:{free_port()}", "k", timeout=2) as down:
        with pytest.raises(DnsUnavailable) as caught:
            await down.get_record("example.org", "x.example.org", "A")
    assert caught.value.retryable
    assert "did not answer" in str(caught.value)


# --- the activities -----------------------------------------------------------------------------

async def test_mirror_dns_step_and_compensation(pdns_server: PdnsServer) -> None:  # noqa: F811
    env, acts = ActivityEnvironment(), DnsActivities()
    config = config_for(pdns_server)
    region = unique("RegionX")  # lowercased in the name
    name = f"mirror.{region.lower()}.examplecloud.{pdns_server.zone}"
    ensure = EnsureMirrorDnsRequest(dns=config, cloud="examplecloud", region=region,
                                    addresses=["192.0.2.20", "2001:db8::20"])
    made = await env.run(acts.ensure_mirror_dns, ensure)
    assert made.name == name and made.changed
    assert made.records == {"A": ["192.0.2.20"], "AAAA": ["2001:db8::20"]}
    assert resolve(pdns_server, name, "A") == ["192.0.2.20"]
    assert resolve(pdns_server, name, "AAAA") == ["2001:db8::20"]
    # Retried (a worker crash after the write): nothing written, same answer.
    again = await env.run(acts.ensure_mirror_dns, ensure)
    assert not again.changed and again.records == made.records
    # The mirror lost its IPv6 address: the AAAA rrset goes, the A stays.
    v4 = ensure.model_copy(update={"addresses": ["192.0.2.20"]})
    assert (await env.run(acts.ensure_mirror_dns, v4)).records == {"A": ["192.0.2.20"]}
    assert resolve(pdns_server, name, "AAAA") == []
    assert resolve(pdns_server, name, "A") == ["192.0.2.20"]
    # The compensation, twice.
    delete = DeleteMirrorDnsRequest(dns=config, cloud="examplecloud", region=region)
    gone = await env.run(acts.delete_mirror_dns, delete)
    assert gone.changed and gone.records == {}
    assert resolve(pdns_server, name, "A") == []
    assert not (await env.run(acts.delete_mirror_dns, delete)).changed


async def test_mirror_dns_in_a_subdomain(pdns_server: PdnsServer) -> None:  # noqa: F811
    env, acts = ActivityEnvironment(), DnsActivities()
    config = config_for(pdns_server, domain=f"mirrors.{pdns_server.zone}")
    region = unique()
    made = await env.run(acts.ensure_mirror_dns, EnsureMirrorDnsRequest(
        dns=config, cloud="c1", region=region, addresses=["192.0.2.30"]))
    assert made.name == f"mirror.{region}.c1.mirrors.{pdns_server.zone}"
    assert resolve(pdns_server, made.name, "A") == ["192.0.2.30"]
    await env.run(acts.delete_mirror_dns, DeleteMirrorDnsRequest(dns=config, cloud="c1",
                                                                 region=region))
    assert resolve(pdns_server, made.name, "A") == []


@pytest.mark.parametrize(("changes", "request_changes", "error_type", "says"), [
    ({"zone": "absent.example"}, {}, "DnsZoneMissing", "pdnsutil create-zone absent.example"),
    ({}, {"cloud": "bad_cloud"}, "DnsNameError", "cloud 'bad_cloud'"),
    ({}, {"addresses": ["mirror.example.org"]}, "DnsNameError", "not an IP address"),
    ({"api-key-file": "/nonexistent/pdns-key"}, {}, "DnsKeyFileError",
     "/nonexistent/pdns-key: cannot read it"),
])
async def test_activity_errors_are_non_retryable_and_clear(
        pdns_server: PdnsServer, changes: dict, request_changes: dict,  # noqa: F811
        error_type: str, says: str) -> None:
    request = EnsureMirrorDnsRequest(dns=config_for(pdns_server, **changes), cloud="c1",
                                     region=unique(), addresses=["192.0.2.40"])
    request = request.model_copy(update=request_changes)
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(DnsActivities().ensure_mirror_dns, request)
    assert caught.value.non_retryable
    assert caught.value.type == error_type
    assert says in str(caught.value)


async def test_activity_with_a_wrong_key_file(pdns_server: PdnsServer,  # noqa: F811
                                              tmp_path: Path) -> None:
    key_file = tmp_path / "wrong-key"
    key_file.write_text("not-the-key\n")
    region = unique()
    request = EnsureMirrorDnsRequest(dns=config_for(pdns_server, **{"api-key-file": str(key_file)}),
                                     cloud="c1", region=region, addresses=["192.0.2.50"])
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(DnsActivities().ensure_mirror_dns, request)
    assert caught.value.type == "DnsAuthError" and caught.value.non_retryable
    assert "not-the-key" not in str(caught.value)
    assert resolve(pdns_server, f"mirror.{region}.c1.{pdns_server.zone}", "A") == []


def test_resolver_sees_nothing_for_an_unknown_name(pdns_server: PdnsServer) -> None:  # noqa: F811
    # Guards the resolve() helper itself: a name never made resolves to nothing, and a name
    # outside every zone is refused by the server, not silently answered.
    assert resolve(pdns_server, f"never.{pdns_server.zone}", "A") == []
    with pytest.raises(dns.exception.DNSException):
        resolve(pdns_server, "www.example.com", "A")


# --- the preflight check ------------------------------------------------------------------------

async def test_check_mirror_dns_reports_and_changes_nothing(
        pdns_server: PdnsServer, tmp_path: Path) -> None:  # noqa: F811
    env, acts = ActivityEnvironment(), DnsActivities()
    region = unique()
    good = await env.run(acts.check_mirror_dns, CheckMirrorDnsRequest(
        dns=config_for(pdns_server), cloud="c1", region=region))
    assert good.ok and good.problems == [] and good.existing == {}
    assert good.name == f"mirror.{region}.c1.{pdns_server.zone}"
    # A record already there (another attempt's) is reported, not changed.
    await env.run(acts.ensure_mirror_dns, EnsureMirrorDnsRequest(
        dns=config_for(pdns_server), cloud="c1", region=region, addresses=["192.0.2.70"]))
    seen = await env.run(acts.check_mirror_dns, CheckMirrorDnsRequest(
        dns=config_for(pdns_server), cloud="c1", region=region))
    assert seen.ok and seen.existing == {"A": ["192.0.2.70"]}
    assert resolve(pdns_server, good.name, "A") == ["192.0.2.70"]

    wrong_key = tmp_path / "wrong"
    wrong_key.write_text("nope\n")
    cases = [
        (config_for(pdns_server, zone="absent.example"), "c1", "zone 'absent.example' does not"),
        (config_for(pdns_server, **{"api-key-file": str(wrong_key)}), "c1",
         "refused the API key"),
        (config_for(pdns_server, **{"api-key-file": str(tmp_path / "none")}), "c1",
         "cannot read it"),
        (config_for(pdns_server), "bad_cloud", "cloud 'bad_cloud'"),
        (config_for(pdns_server, **{"api-url": f"http://127.0.0.1:{free_port()}"}), "c1",
         "did not answer"),
    ]
    for config, cloud, says in cases:
        check = await env.run(acts.check_mirror_dns, CheckMirrorDnsRequest(
            dns=config, cloud=cloud, region=region))
        assert not check.ok, says
        assert any(says in p for p in check.problems), (says, check.problems)


async def test_the_api_key_is_in_no_log_line(pdns_server: PdnsServer,  # noqa: F811
                                             caplog: pytest.LogCaptureFixture) -> None:
    env, acts = ActivityEnvironment(), DnsActivities()
    request = EnsureMirrorDnsRequest(dns=config_for(pdns_server), cloud="c1", region=unique(),
                                     addresses=["192.0.2.80"])
    with caplog.at_level("DEBUG"):  # httpx and httpcore included
        made = await env.run(acts.ensure_mirror_dns, request)
        await env.run(acts.delete_mirror_dns, DeleteMirrorDnsRequest(
            dns=request.dns, cloud="c1", region=request.region))
    assert made.name in caplog.text  # the activity did log, and the capture saw it
    assert pdns_server.api_key not in caplog.text
    assert pdns_server.api_key not in request.model_dump_json()
    assert pdns_server.api_key not in made.model_dump_json()
