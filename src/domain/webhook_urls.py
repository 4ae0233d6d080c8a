"""Which URLs and addresses webhooks may be sent to: the rules that keep them off internal networks.

A webhook makes our servers send requests to a URL a customer chose, so that URL must not
reach what only our servers can reach (SSRF): loopback, private networks, cloud metadata
services. `check_url` refuses such URLs by their text; the sender also resolves each host and
refuses every non-global address with `address_allowed`, since a public name can point
anywhere. `allow_private` lifts both for development and tests.
"""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit, urlunsplit

from domain.errors import ValidationError

MAX_URL_LENGTH = 2048

#: Names that only mean something inside a network (RFC 6761, 6762, 8375 and cloud DNS).
_PRIVATE_NAMES = ("localhost",)
_PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")

# `ip.is_global` varies between Python releases (3.11.7 says 6to4 of 127.0.0.1 is global),
# so every range that must never be reached is also listed here.
_REFUSED_V4 = tuple(
    IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, including the 169.254.169.254 metadata service
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
    )
)
# Outside 2000::/3 no IPv6 address is global unicast: loopback, unspecified, IPv4-compatible,
# unique local fc00::/7 (the AWS metadata service fd00:ec2::254 among them), link-local,
# site-local, multicast and reserved are all refused by this one range.
_GLOBAL_UNICAST_V6 = IPv6Network("2000::/3")
_REFUSED_V6 = tuple(
    IPv6Network(net)
    for net in (
        "2001::/23",  # IETF protocol assignments, Teredo included
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
    )
)
_NAT64 = IPv6Network("64:ff9b::/96")

_HOSTNAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
# WHATWG URL parsing reads a host whose last label is a number as an IPv4 address, in any of
# the old forms (`2130706433`, `0x7f.1`, `127.1`), and so do many resolvers.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


class WebhookUrlNotAllowed(ValidationError):
    """A webhook URL is malformed or could reach an address it must not."""

    code = "webhook_url_not_allowed"


def check_url(url: str, *, allow_private: bool) -> str:
    """The URL with its scheme and host in lowercase, or WebhookUrlNotAllowed saying why not."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlNotAllowed(f"a webhook URL is at most {MAX_URL_LENGTH} characters")
    # urlsplit quietly drops tabs and newlines and strips spaces; refuse them instead.
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise WebhookUrlNotAllowed("a webhook URL may not contain spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise WebhookUrlNotAllowed(f"not a valid URL: {exc}") from exc
    try:
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlNotAllowed("a webhook URL's port is between 1 and 65535") from exc
    scheme = parts.scheme  # urlsplit gives it in lowercase
    schemes = ("http", "https") if allow_private else ("https",)
    if scheme not in schemes:
        raise WebhookUrlNotAllowed(f"a webhook URL must use {' or '.join(schemes)}")
    if "@" in parts.netloc:
        raise WebhookUrlNotAllowed("a webhook URL may not contain a user name or password")
    if "#" in url:
        raise WebhookUrlNotAllowed("a webhook URL may not contain a fragment (#…)")
    host = parts.hostname
    if not host:
        raise WebhookUrlNotAllowed("a webhook URL must have a host")
    if port == 0:
        raise WebhookUrlNotAllowed("a webhook URL's port is between 1 and 65535")
    _check_host(host, allow_private=allow_private)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path, parts.query, ""))


def _check_host(host: str, *, allow_private: bool) -> None:
    if "%" in host:
        raise WebhookUrlNotAllowed("a webhook URL's host may not contain a zone or % escapes")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if not address_allowed(address, allow_private=allow_private):
            raise WebhookUrlNotAllowed(f"address not allowed: {host} is not a public address")
        return
    try:
        # The IDNA form is what is resolved: fullwidth letters spelling localhost are localhost.
        name = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise WebhookUrlNotAllowed(f"not a valid host name: {host}") from exc
    if not _HOSTNAME.fullmatch(name):
        raise WebhookUrlNotAllowed(f"not a valid host name: {host}")
    name = name.removesuffix(".")
    if _NUMERIC_LABEL.fullmatch(name.rpartition(".")[2]):
        raise WebhookUrlNotAllowed(f"not a valid IP address: {host}")
    if allow_private:
        return
    if name in _PRIVATE_NAMES or name.endswith(_PRIVATE_SUFFIXES) or "." not in name:
        raise WebhookUrlNotAllowed(f"host not allowed: {host} is not a public host name")


def address_allowed(address: str | IPv4Address | IPv6Address, *, allow_private: bool) -> bool:
    """Whether requests may go to this IP address: only globally routable ones, unless private."""
    if allow_private:
        return True
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address)
        except ValueError:
            return False
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            # The packet ends at the embedded IPv4 address, so that is the one to judge.
            return _ipv4_allowed(embedded)
        return _ipv6_allowed(address)
    return _ipv4_allowed(address)


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped, 6to4 or NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _ipv4_allowed(address: IPv4Address) -> bool:
    if any(address in network for network in _REFUSED_V4):
        return False
    return _python_says_global(address)


def _ipv6_allowed(address: IPv6Address) -> bool:
    if address not in _GLOBAL_UNICAST_V6 or any(address in net for net in _REFUSED_V6):
        return False
    return _python_says_global(address)


def _python_says_global(address: IPv4Address | IPv6Address) -> bool:
    # A second opinion: newer Pythons learn of special ranges that the lists above lack.
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )
