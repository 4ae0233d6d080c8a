"""`POST /v1/public/revoke`: whoever finds a leaked key may revoke it, with no key of their own.

No account and no API key: the request carries no `Authorization`. The API answers
`202 {"status": "accepted"}` whatever was sent (live keys, unknown ones, revoked ones, strings
that are not keys at all) and does the work after answering, so there is nothing to return.
Each live secret key of ours among them is flagged exposed and revoked (or rolled with a
1-hour grace, per its organization's leak policy). One client address may make 10 calls a
minute; a 429 is retried after its `Retry-After` like any other.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpx

from icodrip_client._async_client import AsyncIcodrip
from icodrip_client._client import Icodrip
from icodrip_client._core import Call, path

#: What the clients are made with here: they need a key, but these calls never send one.
_NO_KEY = "(none: public revocation sends no key)"


def _revocation(keys: str | Iterable[str]) -> Call[None]:
    # One string is one key (not a sequence of one-character "keys").
    texts = [keys] if isinstance(keys, str) else list(keys)
    return Call(
        "POST",
        path("public", "revoke"),
        _accepted,
        body={"keys": texts},
        authenticated=False,
    )


def _accepted(body: Any) -> None:
    """`{"status": "accepted"}`, whatever was sent: nothing to tell the caller."""
    return None


def revoke_leaked_keys(
    keys: str | Iterable[str],
    *,
    base_url: str | None = None,
    verify: bool | str | ssl.SSLContext = True,
    timeout: float | httpx.Timeout | None = None,
    max_retries: int = 2,
    max_retry_delay: float = 60.0,
    http_client: httpx.Client | None = None,
) -> None:
    """Revoke keys found where they should not be (a repository, a paste, a log).

    `keys`: 1 to 100 strings (one string: one key). No API key is needed or sent. The API
    never says what it found, so this returns None once the request is accepted; it raises as
    any call does when it is not (`UnprocessableEntityError` for an empty or too long list,
    `RateLimitError` when this address used up its 10 calls a minute, connection errors).
    `base_url` defaults to `ICODRIP_BASE_URL`; the other settings are `Icodrip`'s.
    """
    call = _revocation(keys)
    with Icodrip(
        _NO_KEY,
        base_url=base_url,
        verify=verify,
        timeout=timeout,
        max_retries=max_retries,
        max_retry_delay=max_retry_delay,
        http_client=http_client,
    ) as client:
        client._run(call)


async def async_revoke_leaked_keys(
    keys: str | Iterable[str],
    *,
    base_url: str | None = None,
    verify: bool | str | ssl.SSLContext = True,
    timeout: float | httpx.Timeout | None = None,
    max_retries: int = 2,
    max_retry_delay: float = 60.0,
    http_client: httpx.AsyncClient | None = None,
) -> None:
    """`revoke_leaked_keys` for asyncio."""
    call = _revocation(keys)
    async with AsyncIcodrip(
        _NO_KEY,
        base_url=base_url,
        verify=verify,
        timeout=timeout,
        max_retries=max_retries,
        max_retry_delay=max_retry_delay,
        http_client=http_client,
    ) as client:
        await client._run(call)
