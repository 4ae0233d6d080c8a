"""Per-key rate limits: fixed 60-second windows aligned to the Unix epoch minute.

A window starts at `now - now % 60`. Every hit is numbered within its window (1, 2, …) by
whoever counts (Redis or the process); `decide` turns that number into the answer and the
values of the response headers. Both limiters call it, so they agree to the header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_SECONDS = 60
DEFAULT_LIMIT_PER_MINUTE = 100


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


def refuse(limit: int, now: float) -> RateLimitDecision:
    """A refusal with the headers of an exhausted window (used when counting is impossible)."""
    return decide(limit + 1, limit, now)
