"""Which hosts a verification email may link to (`redirect_url`), and why one is refused.

A host reaches these functions as the URL parser left it (WHATWG rules, pydantic-core's `url`
crate): lower case, international names in IDNA ASCII (`xn--...`), percent-escapes decoded, and
every IPv4 spelling made dotted decimal (`2130706433`, `0x7f.1`, `0177.0.0.1` and `127.1` are
all `127.0.0.1`); IPv6 in brackets, compressed. What is checked here:

- `name_problem`: RFC 1035 lengths, whatever the setting. A name is at most 253 octets, each
  label 1 to 63 (one trailing dot, the root, is allowed and not counted);
- `refusal`: with `VERIFICATION__REDIRECT_HOSTS` set, the host must be listed (exactly, or
  under a listed `*.domain`). With the setting empty, any host but those a link must never lead
  to: loopback (`localhost`, `*.localhost`, 127.0.0.0/8, ::1), link-local (169.254.0.0/16,
  fe80::/10), private, shared, unspecified, reserved and multicast addresses, cloud metadata
  endpoints (169.254.169.254, fd00:ec2::254, 100.100.100.200, `metadata.google.internal`...),
  special-use names no public DNS answers for (`.local`, `.internal`, `.arpa`, `.test`,
  `.invalid`, `.onion`), and one-label names (resolved through a local search domain). An IPv6
  address that embeds an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
  `2002::/16`) is judged by the IPv4 address.

Not detected: a public name whose DNS answers a private or loopback address (`localtest.me`,
DNS rebinding). The link is opened later, by the recipient's browser, so resolving it now would
prove nothing; listing the hosts the service may link to is what closes that door.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import AnyUrl, TypeAdapter, ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAME_MAX_OCTETS: Final = 253
LABEL_MAX_OCTETS: Final = 63

# Cloud instance metadata endpoints: AWS (IPv4, IPv6, ECS), GCP, Azure, Oracle, DigitalOcean,
# OpenStack (169.254.169.254 for most), Alibaba Cloud, Oracle's legacy address.
METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "192.0.0.192",
    )
)
METADATA_NAMES: Final = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data"}
)
# email-validator's special-use names (arpa, invalid, local, localhost, onion, test), and
# `internal`, which ICANN reserved for private use (2024).
SPECIAL_USE_NAMES: Final = frozenset({*SPECIAL_USE_DOMAIN_NAMES, "internal"})
OPEN_WARNING: Final = (
    "VERIFICATION__REDIRECT_HOSTS is empty: verification emails may link to any public host "
    "(loopback, private and metadata hosts are still refused). List the hosts of your app"
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_URL: Final = TypeAdapter(AnyUrl)


def name_problem(host: str) -> str | None:
    """What breaks RFC 1035's lengths in the host name `host` (None for an IP literal)."""
    if _address(host) is not None:
        return None
    name = host.removesuffix(".")
    if len(name.encode()) > NAME_MAX_OCTETS:
        return f"the host name is longer than {NAME_MAX_OCTETS} octets (RFC 1035)"
    labels = name.split(".")
    if any(len(label.encode()) > LABEL_MAX_OCTETS for label in labels):
        return f"a label of the host name is longer than {LABEL_MAX_OCTETS} octets (RFC 1035)"
    if "" in labels:
        return "the host name has an empty label (two dots in a row, or a leading dot)"
    return None


def refusal(host: str, allowed: tuple[str, ...]) -> str | None:
    """Why a link may not lead to `host` (as the URL parser left it), or None if it may.

    `allowed` is the parsed `VERIFICATION__REDIRECT_HOSTS` (`parse_allowed`); empty, any host
    but the ones this module's docstring lists.
    """
    if allowed:
        return None if listed(host, allowed) else "the host is not one this service links to"
    address = _address(host)
    if address is not None:
        kind = address_kind(address)
        return None if kind is None else f"the host is {kind}; links lead to public hosts only"
    name = host.removesuffix(".")
    kind = name_kind(name)
    return None if kind is None else f"the host is {kind}; links lead to public hosts only"


def listed(host: str, allowed: tuple[str, ...]) -> bool:
    """`host` is in `allowed`, or under one of its `*.domain` entries."""
    name = host.removesuffix(".")
    for entry in allowed:
        if entry.startswith("*."):
            if name.endswith(entry[1:]):
                return True
        elif name == entry:
            return True
    return False


def address_kind(address: IPAddress) -> str | None:
    """What makes `address` no place for a link, or None for a public address."""
    address = _embedded_ipv4(address)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global or address.is_reserved:
        return "not a public address"
    return None


def name_kind(name: str) -> str | None:
    """What makes the host name `name` (no trailing dot) no place for a link, or None."""
    labels = name.split(".")
    if labels[-1] == "localhost":
        return "a loopback name"
    if name in METADATA_NAMES:
        return "a cloud metadata host"
    if len(labels) == 1:
        return "a name of one label, which only a local network resolves"
    if labels[-1] in SPECIAL_USE_NAMES:
        return f"a special-use name (.{labels[-1]}) that no public DNS resolves"
    return None


def parse_allowed(text: str) -> tuple[str, ...]:
    """`VERIFICATION__REDIRECT_HOSTS` (comma-separated hosts, `*.domain` for its subdomains)
    as `listed` compares them: each host as the URL parser writes it, without a trailing dot.

    Raises:
        ValueError: for an entry that is not a host (a port, a path, user info, a bad name).
    """
    entries: list[str] = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        wildcard = raw.startswith("*.")
        given = raw.removeprefix("*.")
        if _address(given) is not None and ":" in given and not given.startswith("["):
            given = f"[{given}]"  # a bare IPv6 address
        bracketed = given.startswith("[") and given.endswith("]")
        bare = given[1:-1] if bracketed else given
        if any(mark in bare for mark in "/?#@*[]\\ ") or (":" in bare and not bracketed):
            raise ValueError(
                f"'{raw}' is not a host: give names or IP addresses, comma-separated, without "
                "scheme, port or path (e.g. app.example.com, *.example.org, 203.0.113.7)"
            )
        try:
            host = _URL.validate_python(f"http://{given}/").host
        except ValidationError:
            raise ValueError(f"'{raw}' is not a valid host name or IP address") from None
        assert host is not None  # an http URL always has one
        if (problem := name_problem(host)) is not None:
            raise ValueError(f"'{raw}': {problem}")
        if wildcard and _address(host) is not None:
            raise ValueError(f"'{raw}': a wildcard applies to names, not to IP addresses")
        entries.append(("*." if wildcard else "") + host.removesuffix("."))
    return tuple(dict.fromkeys(entries))


def _address(host: str) -> IPAddress | None:
    # An IPv4 address ends with a digit and an IPv6 one has colons: a name is neither, and
    # telling it so here spares the ValueError that ip_address raises for it.
    if ":" not in host and not host[-1:].isdigit():
        return None
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4), else `address`.

    Teredo (2001::/32) is left alone: it is refused as a private range whatever it carries.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return address
