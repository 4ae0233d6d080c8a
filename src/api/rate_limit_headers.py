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


def rate_limit_headers(decision: RateLimitDecision, now: float) -> dict[str, str]:
    """Headers for a response answered at `now`; `Retry-After` only when refused."""
    seconds_to_reset = max(0, math.ceil(decision.reset_at - now))
    policy = decision.policy
    headers = {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(decision.reset_at),
        "RateLimit-Policy": f'"{policy}";q={decision.limit};w={WINDOW_SECONDS}',
        "RateLimit": f'"{policy}";r={decision.remaining};t={seconds_to_reset}',
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, seconds_to_reset))
    return headers
