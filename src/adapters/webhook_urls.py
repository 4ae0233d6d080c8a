"""Judging a webhook URL where it is added or changed: the pure rules, then its host resolved.

A host whose name resolves to a private address is refused when the endpoint is saved (the
user hears of it at once); the sender checks again at every connection, against the address it
actually connects to (`adapters.webhook_sender`), since DNS answers change.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import urlsplit

from domain.webhook_urls import WebhookUrlNotAllowed, address_allowed, check_url

#: The addresses a host name resolves to (for tests: a fake DNS).
Resolve = Callable[[str], list[str]]


#: Seconds a host may take to resolve when an endpoint is saved.
RESOLVE_TIMEOUT = 3.0
# Lookups run here, so a host under a slow name server holds these threads, not the API's.
_lookups = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


def system_resolve(host: str) -> list[str]:
    """The host's addresses, as the system resolver gives them within `RESOLVE_TIMEOUT`."""
    lookup = _lookups.submit(socket.getaddrinfo, host, None, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=RESOLVE_TIMEOUT)
    except FutureTimeout:
        raise OSError(f"no answer within {RESOLVE_TIMEOUT:g} s") from None
    return sorted({str(info[4][0]) for info in infos})


def resolving_url_check(
    *, allow_private: bool, resolve: Resolve = system_resolve
) -> Callable[[str], str]:
    """A URL check for `application.webhooks`: the rules of `domain.webhook_urls`, then every
    address of the host must be public (unless private ones are allowed)."""

    def check(url: str) -> str:
        normalized = check_url(url, allow_private=allow_private)
        if allow_private:
            return normalized
        host = (urlsplit(normalized).hostname or "").strip("[]")
        try:
            addresses = resolve(host)
        except (OSError, UnicodeError):
            raise WebhookUrlNotAllowed(
                f"the host {host[:100]!r} does not resolve: use a public HTTPS address"
            ) from None
        if not addresses:
            raise WebhookUrlNotAllowed(f"the host {host[:100]!r} does not resolve")
        for address in addresses:
            if not address_allowed(address, allow_private=False):
                # Not naming the address: the API must not tell what internal names resolve to.
                raise WebhookUrlNotAllowed(
                    f"the host {host[:100]!r} resolves to an address that is not public: "
                    "webhooks are sent to public HTTPS addresses only"
                )
        return normalized

    return check
