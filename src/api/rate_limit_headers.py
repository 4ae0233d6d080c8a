"""The rate-limit response headers, from a limiter's decision.

Besides the `X-RateLimit-*` trio of the product contract, the fields of
draft-ietf-httpapi-ratelimit-headers (-08 and later, structured fields):
`RateLimit-Policy: "per-key";q=100;w=60` and `RateLimit: "per-key";r=42;t=17`.

All five describe one policy, the decision's: the key's own limit, except on a refusal by
another limit (a public key's per-address one), whose numbers explain the 429 and its
`Retry-After` (docs/adr/0004).
"""

from __future__ import annotations

import math

from domain.rate_limits import WINDOW_SECONDS, RateLimitDecision

#: The contract's spelling of each header name.
_NAMES = {
    name.lower().encode(): name
    for name in (
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "RateLimit-Policy",
        "RateLimit",
        "Retry-After",
    )
}


def rate_limit_header_pairs(decision: RateLimitDecision, now: float) -> list[tuple[bytes, bytes]]:
    """Raw ASGI header pairs (lower-case names) for a response answered at `now`;
    `retry-after` only when refused. Built directly: every keyed response pays for them."""
    seconds_to_reset = max(0, math.ceil(decision.reset_at - now))
    limit, remaining, policy = decision.limit, decision.remaining, decision.policy
    pairs = [
        (b"x-ratelimit-limit", b"%d" % limit),
        (b"x-ratelimit-remaining", b"%d" % remaining),
        (b"x-ratelimit-reset", b"%d" % decision.reset_at),
        (b"ratelimit-policy", f'"{policy}";q={limit};w={WINDOW_SECONDS}'.encode()),
        (b"ratelimit", f'"{policy}";r={remaining};t={seconds_to_reset}'.encode()),
    ]
    if not decision.allowed:
        pairs.append((b"retry-after", b"%d" % max(1, seconds_to_reset)))
    return pairs


def rate_limit_headers(decision: RateLimitDecision, now: float) -> dict[str, str]:
    """The same headers by their contract names (for readers other than the ASGI edge)."""
    return {_NAMES[name]: value.decode() for name, value in rate_limit_header_pairs(decision, now)}
