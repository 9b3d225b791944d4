"""The pure DNS name helpers and the `dns:` config model (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lockmaster.activities.dns import split_addresses
from lockmaster.config.dns import DnsConfig, read_api_key
from lockmaster.util.dns_names import (
    DnsNameError,
    absolute,
    address_type,
    check_label,
    check_name,
    check_record,
    in_zone,
    mirror_name,
)


def test_mirror_name_is_seed_004s_shape() -> None:
    assert mirror_name("bhs1", "ovh", "openstack.org") == "mirror.bhs1.ovh.openstack.org"
    assert mirror_name("RegionOne", "Example", "ci.example.org.") == \
        "mirror.regionone.example.ci.example.org"


@pytest.mark.parametrize(("region", "cloud", "domain", "says"), [
    ("region_one", "ovh", "example.org", "region 'region_one'"),
    ("r1", "my.cloud", "example.org", "cloud 'my.cloud'"),
    ("r1", "-ovh", "example.org", "not at the start or end"),
    ("r" * 64, "ovh", "example.org", "64 characters; at most 63"),
    ("r1", "ovh", "Example.org", "use lowercase"),
    ("r1", "ovh", "example..org", "it is empty"),
    ("", "ovh", "example.org", "region ''"),
])
def test_bad_mirror_names_say_what_and_why(region: str, cloud: str, domain: str,
                                           says: str) -> None:
    with pytest.raises(DnsNameError) as caught:
        mirror_name(region, cloud, domain)
    assert says in str(caught.value)


def test_name_length_limit() -> None:
    long_domain = ".".join(["a" * 63] * 4)  # 255 characters
    with pytest.raises(DnsNameError, match="at most 253"):
        check_name(long_domain)
    assert check_name("a" * 63 + ".org.") == "a" * 63 + ".org"
    assert check_label("a-1", "label") == "a-1"
    assert absolute("x.example.org") == "x.example.org."


def test_in_zone() -> None:
    assert in_zone("mirror.r1.c.example.org", "example.org.")
    assert in_zone("example.org", "example.org")
    assert not in_zone("mirror.r1.c.badexample.org", "example.org")
    assert not in_zone("example.com", "example.org")


def test_addresses() -> None:
    assert address_type("192.0.2.1") == "A"
    assert address_type("2001:db8::1") == "AAAA"
    with pytest.raises(DnsNameError, match="not an IP address"):
        address_type("mirror.example.org")
    assert split_addresses(["192.0.2.2", "2001:db8::1", "192.0.2.1", "192.0.2.2"]) == \
        {"A": ["192.0.2.1", "192.0.2.2"], "AAAA": ["2001:db8::1"]}


@pytest.mark.parametrize(("args", "says"), [
    (("example.org", "x.example.com", "A", ["192.0.2.1"], 60), "not in zone"),
    (("example.org", "x.example.org", "a", ["192.0.2.1"], 60), "not a DNS type"),
    (("example.org", "x.example.org", "A", [], 60), "no contents"),
    (("example.org", "x.example.org", "A", ["2001:db8::1"], 60), "not an IPv4 address"),
    (("example.org", "x.example.org", "AAAA", ["192.0.2.1"], 60), "not an IPv6 address"),
    (("example.org", "x.example.org", "A", ["192.0.2.1"], 0), "ttl 0 is out of range"),
])
def test_check_record_refuses_before_sending(args: tuple, says: str) -> None:
    with pytest.raises(DnsNameError, match=says):
        check_record(*args)


def test_config_defaults_and_domain() -> None:
    config = DnsConfig.model_validate({"api-url": "http://127.0.0.1:8081/",
                                       "api-key-file": "secrets/pdns", "zone": "example.org."})
    assert config.api_url == "http://127.0.0.1:8081"
    assert config.zone == "example.org"
    assert config.mirror_domain == "example.org"
    assert config.server_id == "localhost"
    assert config.resolved(Path("/etc/lm")).api_key_file == Path("/etc/lm/secrets/pdns")
    sub = DnsConfig.model_validate({"api-url": "https://dns.example.org", "api-key-file": "/k",
                                    "zone": "example.org", "domain": "ci.example.org"})
    assert sub.mirror_domain == "ci.example.org"


@pytest.mark.parametrize(("data", "says"), [
    ({"domain": "ci.example.com"}, "not inside zone"),
    ({"zone": "Example.org"}, "use lowercase"),
    ({"api-url": "127.0.0.1:8081"}, "http(s)://host:port"),
    ({"api-url": "http://admin:pw@127.0.0.1:8081"}, "no credentials in the URL"),
    ({"api-key": "inline-secret"}, "api-key"),  # unknown key: inline secrets are refused
    ({"ttl": 0}, "ttl"),
])
def test_config_errors(data: dict, says: str) -> None:
    base = {"api-url": "http://127.0.0.1:8081", "api-key-file": "/k", "zone": "example.org"}
    with pytest.raises(ValidationError) as caught:
        DnsConfig.model_validate({**base, **data})
    assert says in str(caught.value)


def test_read_api_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\nignored\n")
    assert read_api_key(key_file) == "s3cret"
    key_file.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_api_key(key_file)
    with pytest.raises(ValueError, match="cannot read it") as caught:
        read_api_key(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(caught.value)


def test_dns_in_lockmaster_yaml(tmp_path: Path) -> None:
    from lockmaster.config.loader import ConfigError, load_config, parse_config

    path = tmp_path / "lockmaster.yaml"
    path.write_text("dns:\n  api-url: http://127.0.0.1:8081\n  api-key-file: secrets/pdns\n"
                    "  zone: example.org\n")
    config = load_config(path)
    assert config.dns is not None
    base = config.source.parent if config.source else None
    assert config.dns.resolved(base).api_key_file == tmp_path / "secrets/pdns"
    with pytest.raises(ConfigError) as caught:
        parse_config("dns:\n  api-url: http://127.0.0.1:8081\n  api-key-file: k\n"
                     "  zone: example.org\n  domain: ci.example.com\n", "lockmaster.yaml")
    message = str(caught.value)
    assert "dns" in message and "not inside zone" in message
