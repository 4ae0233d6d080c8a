"""Per-key rate limits: fixed 60-second windows aligned to the Unix epoch minute.

A window starts at `now - now % 60`. Every hit is numbered within its window (1, 2, …) by
whoever counts (Redis or the process); `decide` turns that number into the answer and the
values of the response headers. Both limiters call it, so they agree to the header.

A decision names the policy it answers for (`PER_KEY` unless the caller says otherwise), so
the headers of a refusal describe the limit that refused it (docs/adr/0004).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_SECONDS = 60
DEFAULT_LIMIT_PER_MINUTE = 100

#: Policy names, as the `RateLimit-Policy` header spells them.
PER_KEY = "per-key"
PER_ADDRESS = "per-address"


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """The answer for one hit: admitted or not, and what the response headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: int
    """Unix seconds when the current window ends."""
    retry_after: int
    """Seconds until the window ends when refused (at least 1); 0 when allowed."""
    policy: str = PER_KEY
    """The limit this decision is about (`PER_KEY`, `PER_ADDRESS`)."""
    unavailable: bool = False
    """Refused because the hit could not be counted at all (a fail-closed limiter without
    its store): `retry_after` is then when counting may work again, and no limit was reached."""


def window_start(now: float) -> int:
    """Unix second at which the window holding `now` began (a multiple of 60)."""
    second = math.floor(now)
    return second - second % WINDOW_SECONDS


def decide(count_after_hit: int, limit: int, now: float) -> RateLimitDecision:
    """The decision for the hit numbered `count_after_hit` in its window, at `now`.

    The first `limit` hits of a window are admitted, every later one is refused until the
    window ends; a limit of 0 refuses everything.
    """
    if limit < 0:
        raise ValueError(f"a rate limit cannot be negative: {limit}")
    reset_at = window_start(now) + WINDOW_SECONDS
    allowed = count_after_hit <= limit
    return RateLimitDecision(
        allowed=allowed,
        limit=limit,
        remaining=max(0, limit - count_after_hit),
        reset_at=reset_at,
        retry_after=0 if allowed else max(1, math.ceil(reset_at - now)),
    )


def unavailable(limit: int, now: float, retry_after: int) -> RateLimitDecision:
    """A refusal because nothing could count the hit; try again in `retry_after` seconds."""
    return RateLimitDecision(
        allowed=False,
        limit=limit,
        remaining=0,
        reset_at=window_start(now) + WINDOW_SECONDS,
        retry_after=max(1, retry_after),
        unavailable=True,
    )
