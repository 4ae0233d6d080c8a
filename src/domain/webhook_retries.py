"""When a failed webhook delivery is tried again, when it is given up, when an endpoint is disabled.

The schedule follows Standard Webhooks / Svix: quick retries for a blip, then hours apart for
an outage, for up to three days after the first attempt. Each delay is jittered by ±20 % so
that the deliveries of one outage do not all come back to the receiver at the same second.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

#: The delay after attempt n failed is RETRY_DELAYS[n - 1]; past the end, the last one again.
RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
#: A message is given up when its next attempt would come later than this after its first.
RETRY_FOR = timedelta(days=3)
#: An endpoint that has failed without a single success for this long is disabled.
DISABLE_AFTER = timedelta(days=5)
#: Seconds one attempt may take, connecting and reading the response included.
ATTEMPT_TIMEOUT = 5.0
#: Jitter: a delay is multiplied by a factor in [1 - JITTER, 1 + JITTER).
JITTER = 0.2


def retry_delay(attempt: int) -> timedelta:
    """The un-jittered delay before the attempt after failed attempt `attempt` (1-based)."""
    if attempt < 1:
        raise ValueError(f"attempts are counted from 1, not {attempt}")
    return RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1]


def next_attempt_at(
    attempt: int,
    first_attempt_at: float,
    now: float,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """When to try again after attempt `attempt` failed at `now`, or None to give up."""
    factor = 1 - JITTER + 2 * JITTER * rand()
    at = now + retry_delay(attempt).total_seconds() * factor
    if at > first_attempt_at + RETRY_FOR.total_seconds():
        return None
    return at


def should_disable(failing_since: float | None, now: float) -> bool:
    """Whether an endpoint failing since `failing_since` (None: it is not) is to be disabled."""
    if failing_since is None:
        return False
    return now - failing_since >= DISABLE_AFTER.total_seconds()
