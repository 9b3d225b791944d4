"""DNS names, pure: labels, names, the region mirror's name (issue 17), record checks.

Labels are lowercase [a-z0-9-], no leading or trailing hyphen, 1-63 characters each, 253
characters in all (RFC 1035's limits; lowercase so the name a job gets in LOCKMASTER_MIRROR is
exactly the one in the zone). No dependencies: the config loader validates with these without
importing the API client (lockmaster/clouds/dns.py).
"""

from __future__ import annotations

import ipaddress
import re

LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MAX_NAME = 253  # characters, without the trailing dot
RECORD_TYPE = re.compile(r"^[A-Z][A-Z0-9]{0,15}$")


class DnsError(Exception):
    """A DNS request failed. `retryable`: False when retrying cannot help (bad name, missing
    zone, refused key, a record the server rejects); True for a server that did not answer."""

    retryable = False


class DnsNameError(DnsError, ValueError):
    """A name, label, type or record content that is not valid (nothing was sent)."""


def check_label(label: str, what: str) -> str:
    """One DNS label, or a DnsNameError saying what is wrong and how to fix it."""
    if not LABEL.match(label):
        if label != label.lower():
            hint = "use lowercase"
        elif len(label) > 63:
            hint = f"it is {len(label)} characters; at most 63"
        elif not label:
            hint = "it is empty"
        else:
            hint = "use only a-z, 0-9 and '-', not at the start or end"
        raise DnsNameError(f"{what} {label!r} is not a valid DNS label: {hint}")
    return label


def check_name(name: str, what: str = "name") -> str:
    """A domain name (trailing dot optional), returned without the trailing dot."""
    bare = name[:-1] if name.endswith(".") else name
    if not bare:
        raise DnsNameError(f"{what} {name!r} is empty")
    if len(bare) > MAX_NAME:
        raise DnsNameError(f"{what} {name!r} is {len(bare)} characters; a DNS name has at most "
                           f"{MAX_NAME}")
    for label in bare.split("."):
        check_label(label, f"{what} {name!r}: label")
    return bare


def absolute(name: str) -> str:
    """The name with the trailing dot PowerDNS's API wants."""
    return check_name(name) + "."


def mirror_name(region: str, cloud: str, domain: str) -> str:
    """`mirror.<region>.<cloud>.<domain>` (seed 004), validated; no trailing dot.

    Region and cloud are lowercased first (OpenStack region names are often "RegionOne"; DNS
    does not tell case apart, and seed 004's own mirrors are lowercase); anything else that is
    not a DNS label (an underscore, a dot, over 63 characters) is an error, not rewritten."""
    region, cloud = region.lower(), cloud.lower()
    check_label(region, "region")
    check_label(cloud, "cloud")
    return check_name(f"mirror.{region}.{cloud}.{check_name(domain, 'domain')}", "mirror name")


def in_zone(name: str, zone: str) -> bool:
    bare, zone_bare = check_name(name), check_name(zone, "zone")
    return bare == zone_bare or bare.endswith("." + zone_bare)


def address_type(address: str) -> str:
    """A for an IPv4 address, AAAA for IPv6; DnsNameError for anything else."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise DnsNameError(
            f"{address!r} is not an IP address (an A or AAAA record's content)") from None
    return "A" if ip.version == 4 else "AAAA"


def check_record(zone: str, name: str, type_: str, contents: list[str], ttl: int) -> None:
    """Refuse before sending: what PowerDNS would refuse, said in lockmaster's words."""
    if not in_zone(name, zone):
        raise DnsNameError(f"record {name!r} is not in zone {zone!r}: the name must end with "
                           f".{check_name(zone, 'zone')}")
    if not RECORD_TYPE.match(type_):
        raise DnsNameError(f"record type {type_!r} is not a DNS type (A, AAAA, CNAME, ...)")
    if not contents:
        raise DnsNameError(f"record {name} {type_}: no contents (use delete_record to remove it)")
    if type_ in ("A", "AAAA"):
        for content in contents:
            if address_type(content) != type_:
                raise DnsNameError(f"record {name} {type_}: {content!r} is not an "
                                   f"{'IPv4' if type_ == 'A' else 'IPv6'} address")
    if not 1 <= ttl <= 2**31 - 1:
        raise DnsNameError(f"record {name} {type_}: ttl {ttl} is out of range (1 .. 2147483647)")
