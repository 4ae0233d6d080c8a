"""When a request is worth sending again, and after how long.

What an answer says about whether the server acted decides what may be repeated:

- The server did not act: a 429 `rate_limit_exceeded` (or a proxy's 429) and any 503 are
  repeated whatever the method, after `Retry-After` (never longer than `max_retry_delay`;
  without the header, an exponential backoff with jitter). So are a 409
  `idempotency_key_in_use` (the same request is still being answered) and a 409 `conflict`
  (concurrent changes kept winning; nothing was changed), after a backoff.
- Repeating cannot help: a 429 `too_many_failed_attempts` (the address sent too many bad keys:
  each try is one more failure) and a 500 (a bug; the server even keeps a keyed POST's 500
  and answers its repeats with it) are raised at once, as is any other 4xx or 5xx.
- The answer may have been lost after the server acted: a broken or timed-out connection, a
  502, 504 or 408 from whatever is in between. Only requests safe to repeat are sent again
  (after a backoff): GET, HEAD and OPTIONS; PUT and PATCH (they set values: the second time
  sets the same ones); and a POST carrying an `Idempotency-Key` (every POST does: the server
  answers a repeat with the first response). The API ignores the header on other methods.
- DELETE is not repeated after such a failure: if the first one was carried out, its repeat
  is a 404, which cannot be told from deleting something that never was, and the deleted
  object the first answer held is gone. The failure is raised instead; a GET tells whether the
  delete happened (404: it did).
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
#: Refusals of requests the server did not act on, retried whatever the method.
NOT_ACTED_STATUSES = frozenset({429, 503})
#: A 429 that retrying only makes worse.
NOT_RETRIED_CODES = frozenset({"too_many_failed_attempts"})
RETRIED_CONFLICTS = frozenset({"idempotency_key_in_use", "conflict"})
#: Answers from in between (a proxy, a gateway) after which the server may have acted.
AMBIGUOUS_STATUSES = frozenset({408, 502, 504})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH"})
#: Methods the server keeps the answers of by `Idempotency-Key`.
KEYED_METHODS = frozenset({"POST"})


def is_safe_to_repeat(method: str, idempotency_key: str | None) -> bool:
    """Whether sending the request again after a lost answer does what sending it once did."""
    method = method.upper()
    return method in SAFE_METHODS or (method in KEYED_METHODS and bool(idempotency_key))


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
        """Seconds to wait before repeating a request the API refused, or None: give up.

        `safe`: whether the request may be repeated after an answer that leaves open whether
        the server acted (see `is_safe_to_repeat`)."""
        if retries_done >= self.max_retries:
            return None
        status = error.status
        if status in NOT_ACTED_STATUSES and error.code not in NOT_RETRIED_CODES:
            asked = retry_after_seconds(error.headers, now)
            if asked is not None:
                return min(asked, self.max_retry_delay)
            return self.backoff(retries_done)
        if status == 409 and error.code in RETRIED_CONFLICTS:
            return self.backoff(retries_done)
        if status in AMBIGUOUS_STATUSES and safe:
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
