"""When a request is worth sending again, and after how long.

- 429 and 503: after `Retry-After` (never longer than `max_retry_delay`).
- Other 5xx, 408, a broken or timed-out connection: exponential backoff with jitter.
- 409 `idempotency_key_in_use` (the same request is still being answered) and `conflict`
  (concurrent changes kept winning; nothing was changed): backoff too.
- Only requests that are safe to repeat: GET, DELETE and PATCH (it sets values: the second
  time sets the same ones), and a POST carrying an `Idempotency-Key` (the server answers a
  repeat with the first response).
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from icodrip_client.errors import APIError

INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 8.0
RETRIED_CONFLICTS = frozenset({"idempotency_key_in_use", "conflict"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT", "PATCH"})


def is_safe_to_repeat(method: str, idempotency_key: str | None) -> bool:
    return method.upper() in SAFE_METHODS or bool(idempotency_key)


def retry_after_seconds(headers: httpx.Headers | Any, now: float) -> float | None:
    """`Retry-After` as seconds to wait: delta-seconds or an HTTP date; None if absent/bad."""
    value = headers.get("retry-after")
    if not isinstance(value, str):
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)


def _certificate_failure(error: BaseException) -> bool:
    """Whether TLS refused the server's certificate somewhere in the chain of causes."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`max_retries` repeats at most (0: none); no single wait longer than `max_retry_delay`."""

    max_retries: int = 2
    max_retry_delay: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries cannot be negative")
        if self.max_retry_delay < 0:
            raise ValueError("max_retry_delay cannot be negative")

    def backoff(self, retries_done: int) -> float:
        """0.5 s, 1 s, 2 s, ... up to 8 s, each less up to a quarter at random (so that many
        clients failing together do not come back together)."""
        delay = min(INITIAL_BACKOFF * 2.0**retries_done, MAX_BACKOFF)
        jitter = 1 - 0.25 * random.random()  # noqa: S311 - spreading retries, not a secret
        return min(delay * jitter, self.max_retry_delay)

    def after_refusal(
        self, error: APIError, retries_done: int, safe: bool, now: float
    ) -> float | None:
        """Seconds to wait before repeating a request the API refused, or None: give up."""
        if retries_done >= self.max_retries or not safe:
            return None
        status = error.status
        if status in (429, 503):
            asked = retry_after_seconds(error.headers, now)
            if asked is not None:
                return min(asked, self.max_retry_delay)
            return self.backoff(retries_done)
        if status == 409 and error.code in RETRIED_CONFLICTS:
            return self.backoff(retries_done)
        if status == 408 or status >= 500:
            return self.backoff(retries_done)
        return None

    def after_failure(
        self, error: httpx.RequestError, retries_done: int, safe: bool
    ) -> float | None:
        """Seconds to wait before repeating a request that got no answer, or None: give up."""
        if retries_done >= self.max_retries or not safe:
            return None
        transient = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
        if not isinstance(error, transient) or _certificate_failure(error):
            return None  # a wrong URL or a certificate we refuse will not heal by waiting
        return self.backoff(retries_done)
