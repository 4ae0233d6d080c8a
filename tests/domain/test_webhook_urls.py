"""Webhook URLs and addresses: only public HTTPS endpoints, never what only our servers reach.

Each refused URL or address below is a way in to an internal service (SSRF) or a malformed
URL; `allow_private` lifts the network rules for development, never the malformed ones.
"""

from __future__ import annotations

import ipaddress

import pytest

from domain.errors import ValidationError
from domain.webhook_urls import MAX_URL_LENGTH, WebhookUrlNotAllowed, address_allowed, check_url

REFUSED_ADDRESSES = [
    "127.0.0.1",
    "127.255.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "100.64.0.1",  # carrier-grade NAT
    "198.18.0.1",  # benchmarking
    "192.0.2.1",  # documentation
    "198.51.100.7",
    "203.0.113.9",
    "192.0.0.9",
    "192.88.99.1",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",  # broadcast
    "::1",
    "::",
    "fc00::1",
    "fd12:3456::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "2001:db8::1",  # documentation
    "3fff::1",
    "2001::1",  # Teredo
    "100::1",
    "64:ff9b:1::a00:1",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:169.254.169.254",  # IPv4-mapped metadata
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible loopback
    "::8.8.8.8",  # IPv4-compatible addresses are deprecated: none is reachable
    "4000::1",  # outside global unicast 2000::/3
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "not an address",
]
ALLOWED_ADDRESSES = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",  # mapped, 6to4 and NAT64 of a public address reach that address
    "2002:808:808::1",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_an_address_that_is_not_globally_routable_is_refused(address: str) -> None:
    assert address_allowed(address, allow_private=False) is False


@pytest.mark.parametrize("address", ALLOWED_ADDRESSES)
def test_a_globally_routable_address_is_allowed(address: str) -> None:
    assert address_allowed(address, allow_private=False) is True


@pytest.fixture
def an_ipaddress_that_knows_no_special_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ipaddress` as a Python that had not heard of any special range would be."""
    for cls in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        monkeypatch.setattr(cls, "is_global", property(lambda self: True))
        for name in SPECIAL_PROPERTIES:
            monkeypatch.setattr(cls, name, property(lambda self: False))


SPECIAL_PROPERTIES = (
    "is_private",
    "is_loopback",
    "is_link_local",
    "is_multicast",
    "is_reserved",
    "is_unspecified",
)


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
@pytest.mark.usefixtures("an_ipaddress_that_knows_no_special_ranges")
def test_the_refusals_hold_whatever_the_pythons_ipaddress_knows(address: str) -> None:
    # `is_global` differs between Python releases: the explicit ranges alone must suffice.
    assert address_allowed(address, allow_private=False) is False


@pytest.mark.parametrize("special", ["is_global", *SPECIAL_PROPERTIES])
def test_an_address_pythons_ipaddress_knows_is_special_is_refused_though_unlisted(
    special: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for cls in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        monkeypatch.setattr(cls, special, property(lambda self: special != "is_global"))

    assert address_allowed("8.8.8.8", allow_private=False) is False
    assert address_allowed("2606:4700:4700::1111", allow_private=False) is False


def test_addresses_may_be_given_as_ip_address_objects() -> None:
    assert address_allowed(ipaddress.ip_address("8.8.8.8"), allow_private=False) is True
    assert address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), allow_private=False) is False


@pytest.mark.parametrize("address", [a for a in REFUSED_ADDRESSES if a != "not an address"])
def test_allow_private_allows_every_address(address: str) -> None:
    assert address_allowed(address, allow_private=True) is True


REFUSED_URLS = [
    ("http://example.com/hook", "https"),
    ("ftp://example.com/hook", "https"),
    ("javascript:alert(1)", "https"),
    ("example.com/hook", "https"),
    ("https:///hook", "must have a host"),
    ("https://user:pass@example.com/hook", "user name or password"),
    ("https://user@example.com/hook", "user name or password"),
    ("https://example.com@127.0.0.1/hook", "user name or password"),
    ("https://example.com/hook#top", "fragment"),
    ("https://example.com/hook#", "fragment"),
    ("https://example.com:0/hook", "port"),
    ("https://example.com:65536/hook", "port"),
    ("https://example.com:https/hook", "port"),
    ("https://127.0.0.1/hook", "address not allowed"),
    ("https://169.254.169.254/latest/meta-data/", "address not allowed"),
    ("https://[::1]/hook", "address not allowed"),
    ("https://[::ffff:127.0.0.1]/hook", "address not allowed"),
    ("https://[::ffff:a9fe:a9fe]/hook", "address not allowed"),
    ("https://[fd00:ec2::254]/hook", "address not allowed"),
    ("https://[fe80::1%25eth0]/hook", "zone"),
    ("https://2130706433/hook", "not a valid IP address"),  # 127.0.0.1 as one number
    ("https://127.1/hook", "not a valid IP address"),
    ("https://0x7f.0.0.1/hook", "not a valid IP address"),
    ("https://0177.0.0.1/hook", "not a valid IP address"),
    ("https://localhost/hook", "not a public host name"),
    ("https://LOCALHOST./hook", "not a public host name"),
    ("https://api.localhost/hook", "not a public host name"),
    ("https://printer.local/hook", "not a public host name"),
    ("https://metadata.google.internal/computeMetadata/v1/", "not a public host name"),
    ("https://db.internal./hook", "not a public host name"),
    ("https://intranet/hook", "not a public host name"),
    ("https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/hook", "not a public host"),
    ("https://exa mple.com/hook", "spaces or control characters"),
    ("https://example.com/ho\nok", "spaces or control characters"),
    ("https://a..b.com/hook", "not a valid host name"),
    ("https://ex!ample.com/hook", "not a valid host name"),
    ("https://[::1/hook", "not a valid URL"),
    ("https://example.com/" + "a" * MAX_URL_LENGTH, "at most 2048"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED_URLS)
def test_a_url_that_could_reach_inside_or_is_malformed_is_refused(url: str, reason: str) -> None:
    with pytest.raises(WebhookUrlNotAllowed, match=reason) as raised:
        check_url(url, allow_private=False)

    assert isinstance(raised.value, ValidationError)
    assert raised.value.code == "webhook_url_not_allowed"


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://example.com/hook", "https://example.com/hook"),
        ("HTTPS://Hooks.Example.COM/Path/To?Q=A", "https://hooks.example.com/Path/To?Q=A"),
        ("https://example.com:8443/hook", "https://example.com:8443/hook"),
        ("https://example.com", "https://example.com"),
        ("https://8.8.8.8/hook", "https://8.8.8.8/hook"),
        ("https://[2606:4700:4700::1111]:443/x", "https://[2606:4700:4700::1111]:443/x"),
        ("https://b\u00fccher.example/hook", "https://b\u00fccher.example/hook"),
        ("https://my_service.example.com/hook", "https://my_service.example.com/hook"),
        ("https://example.com/" + "a" * (MAX_URL_LENGTH - 20), None),
    ],
)
def test_a_public_https_url_is_allowed_with_scheme_and_host_in_lowercase(
    url: str, normalized: str | None
) -> None:
    assert check_url(url, allow_private=False) == (normalized or url)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000/hook",
        "http://127.0.0.1:8000/hook",
        "https://[::1]/hook",
        "http://169.254.169.254/",
        "https://printer.local/hook",
        "http://intranet/hook",
        "https://metadata.google.internal/",
    ],
)
def test_allow_private_allows_http_and_internal_hosts(url: str) -> None:
    assert check_url(url, allow_private=True) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://localhost/hook",
        "http://user:pass@localhost/hook",
        "http://localhost/hook#x",
        "http://localhost:0/hook",
        "http://127.1/hook",
        "http:///hook",
    ],
)
def test_allow_private_still_refuses_malformed_urls(url: str) -> None:
    with pytest.raises(WebhookUrlNotAllowed):
        check_url(url, allow_private=True)
