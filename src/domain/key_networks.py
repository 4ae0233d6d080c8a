"""Where a key may be used from: IP networks (secret keys) and browser origins (public keys)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from domain.errors import ValidationError

MAX_ALLOWED_ORIGINS = 50
MAX_ALLOWED_IPS = 100


def clean_networks(values: tuple[str, ...] | list[str]) -> list[str]:
    """CIDR networks (or single addresses) in canonical form, sorted and without duplicates."""
    networks: set[str] = set()
    for value in values:
        try:
            networks.add(str(ipaddress.ip_network(value.strip(), strict=False)))
        except ValueError:
            raise ValidationError(
                f"allowed IP {value[:60]!r} must be an address or CIDR such as 203.0.113.0/24"
            ) from None
    if len(networks) > MAX_ALLOWED_IPS:
        raise ValidationError(f"at most {MAX_ALLOWED_IPS} allowed IP networks")
    return sorted(networks)


def clean_origins(origins: tuple[str, ...]) -> list[str]:
    """Each origin as `scheme://host[:port]`, as browsers send it in `Origin`."""
    cleaned = [_clean_origin(o) for o in origins]
    if len(cleaned) > MAX_ALLOWED_ORIGINS:
        raise ValidationError(f"at most {MAX_ALLOWED_ORIGINS} allowed origins")
    return cleaned


def _clean_origin(origin: str) -> str:
    """`scheme://host[:port]` with nothing after it, as browsers send in `Origin`."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
        raise ValidationError(f"allowed origin {origin[:80]!r} must look like https://example.com")
    if parts.query or parts.fragment or parts.username:
        raise ValidationError(f"allowed origin {origin[:80]!r} must be scheme://host[:port] only")
    return f"{parts.scheme}://{parts.netloc.lower()}"
