"""The sign-in lock-out lasts its full period, wherever in the counting window it starts."""

from __future__ import annotations

from litestar.stores.memory import MemoryStore

from adapters.rate_limiter import InProcessRateLimiter
from api.dashboard.security import (
    FAILED_SIGN_INS_PER_EMAIL,
    SIGN_IN_LOCK_OUT_SECONDS,
    SignInThrottle,
)

ONE_SECOND_BEFORE_A_NEW_MINUTE = 1_800_000_059.5


async def test_a_lock_out_hit_at_the_end_of_a_window_still_lasts_its_full_period() -> None:
    limiter = InProcessRateLimiter(clock=lambda: ONE_SECOND_BEFORE_A_NEW_MINUTE)
    throttle = SignInThrottle(limiter, MemoryStore())
    outcomes = [
        await throttle.failed("ada@example.com", "192.0.2.7")
        for _ in range(FAILED_SIGN_INS_PER_EMAIL + 1)
    ]

    assert outcomes[:-1] == [None] * FAILED_SIGN_INS_PER_EMAIL
    assert outcomes[-1] == SIGN_IN_LOCK_OUT_SECONDS
    left = await throttle.locked_for("ada@example.com", "198.51.100.9")
    assert left is not None and left >= SIGN_IN_LOCK_OUT_SECONDS - 1


async def test_fewer_failures_than_the_limit_lock_nobody_out() -> None:
    throttle = SignInThrottle(InProcessRateLimiter(), MemoryStore())
    for _ in range(FAILED_SIGN_INS_PER_EMAIL):
        assert await throttle.failed("ada@example.com", "192.0.2.7") is None
    assert await throttle.locked_for("ada@example.com", "192.0.2.7") is None
