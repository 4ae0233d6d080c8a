"""Fixed 60-second windows aligned to the epoch minute, and the decision for the n-th hit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.rate_limits import (
    DEFAULT_LIMIT_PER_MINUTE,
    WINDOW_SECONDS,
    RateLimitDecision,
    decide,
    unavailable,
    window_start,
)

MINUTE = 1_700_000_040  # a multiple of 60


def test_the_window_is_sixty_seconds_and_the_default_limit_a_hundred() -> None:
    assert WINDOW_SECONDS == 60
    assert DEFAULT_LIMIT_PER_MINUTE == 100


@pytest.mark.parametrize(
    ("now", "start"),
    [
        (MINUTE, MINUTE),
        (MINUTE + 0.001, MINUTE),
        (MINUTE + 59.999, MINUTE),
        (MINUTE + 60, MINUTE + 60),
        (MINUTE - 0.5, MINUTE - 60),
    ],
)
def test_a_window_starts_at_the_epoch_minute_holding_now(now: float, start: int) -> None:
    assert window_start(now) == start


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_every_instant_lies_in_the_sixty_seconds_after_its_window_start(now: float) -> None:
    start = window_start(now)

    assert start % 60 == 0
    assert start <= now < start + 60


def test_a_hit_within_the_limit_is_allowed_with_what_remains() -> None:
    assert decide(42, 100, MINUTE + 43) == RateLimitDecision(
        allowed=True, limit=100, remaining=58, reset_at=MINUTE + 60, retry_after=0
    )


def test_the_hit_that_reaches_the_limit_is_allowed_and_leaves_none() -> None:
    decision = decide(100, 100, MINUTE + 10)

    assert decision.allowed
    assert decision.remaining == 0
    assert decision.retry_after == 0


def test_the_hit_past_the_limit_is_refused_until_the_window_ends() -> None:
    decision = decide(101, 100, MINUTE + 43)

    assert not decision.allowed
    assert decision.reset_at == MINUTE + 60
    assert decision.retry_after == 17


def test_retry_after_rounds_up_and_is_at_least_one_second() -> None:
    assert decide(2, 1, MINUTE + 42.2).retry_after == 18
    assert decide(2, 1, MINUTE + 59.999).retry_after == 1
    assert decide(2, 1, MINUTE).retry_after == 60


@given(count=st.integers(1, 10_000), limit=st.integers(0, 5_000))
def test_remaining_is_never_negative_and_allowed_means_within_the_limit(
    count: int, limit: int
) -> None:
    decision = decide(count, limit, MINUTE + 1)

    assert decision.remaining >= 0
    assert decision.allowed == (count <= limit)
    assert (decision.retry_after == 0) == decision.allowed


def test_a_limit_of_zero_refuses_the_first_hit() -> None:
    assert not decide(1, 0, MINUTE).allowed


def test_a_negative_limit_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        decide(1, -1, MINUTE)


def test_an_uncountable_hit_is_refused_as_unavailable_not_as_over_its_limit() -> None:
    decision = unavailable(100, MINUTE + 30, retry_after=0)

    assert not decision.allowed and decision.unavailable
    assert decision.retry_after == 1
    assert decision.reset_at == MINUTE + WINDOW_SECONDS
    assert not decide(101, 100, MINUTE + 30).unavailable


def test_a_decision_is_immutable() -> None:
    decision = decide(1, 100, MINUTE)

    with pytest.raises(AttributeError):
        decision.allowed = False  # type: ignore[misc]
