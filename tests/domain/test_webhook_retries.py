"""The retry schedule: quick retries, then hours apart, jittered, given up after three days.

An endpoint failing for five days without a success is disabled.
"""

from __future__ import annotations

import pytest

from domain.webhook_retries import (
    ATTEMPT_TIMEOUT,
    DISABLE_AFTER,
    RETRY_FOR,
    next_attempt_at,
    should_disable,
)

MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR
T0 = 1_700_000_000.0
# Times are epoch seconds: pytest.approx's default relative tolerance would be ~30 minutes.


def middle() -> float:
    """A rand() that lands on no jitter at all."""
    return 0.5


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [
        (1, 5.0),
        (2, 5 * MINUTE),
        (3, 30 * MINUTE),
        (4, 2 * HOUR),
        (5, 5 * HOUR),
        (6, 10 * HOUR),
        (7, 10 * HOUR),
        (8, 10 * HOUR),
        (20, 10 * HOUR),
    ],
)
def test_the_delay_after_each_failed_attempt_follows_the_standard_schedule(
    attempt: int, delay: float
) -> None:
    assert next_attempt_at(attempt, T0, T0, rand=middle) == pytest.approx(T0 + delay, abs=1e-3)


@pytest.mark.parametrize(("rand", "factor"), [(0.0, 0.8), (0.25, 0.9), (0.999999, 1.2)])
def test_each_delay_is_jittered_by_at_most_twenty_percent(rand: float, factor: float) -> None:
    at = next_attempt_at(4, T0, T0, rand=lambda: rand)

    assert at == pytest.approx(T0 + 2 * HOUR * factor, abs=1e-2)


def test_the_default_jitter_is_random_and_within_bounds() -> None:
    ats = {next_attempt_at(2, T0, T0) for _ in range(50)}

    assert len(ats) > 1
    assert all(at is not None and T0 + 240 <= at < T0 + 360 for at in ats)


def test_the_delay_counts_from_now_not_from_the_first_attempt() -> None:
    now = T0 + DAY

    assert next_attempt_at(6, T0, now, rand=middle) == pytest.approx(now + 10 * HOUR, abs=1e-3)


def test_a_message_is_given_up_when_the_next_attempt_would_be_past_three_days() -> None:
    assert RETRY_FOR.total_seconds() == 3 * DAY
    # 10 h after 2 days 15 h is 3 days 1 h: too late.
    assert next_attempt_at(9, T0, T0 + 2 * DAY + 15 * HOUR, rand=middle) is None


def test_a_message_is_still_retried_at_exactly_three_days() -> None:
    now = T0 + 3 * DAY - 10 * HOUR

    assert next_attempt_at(9, T0, now, rand=middle) == pytest.approx(T0 + 3 * DAY, abs=1e-3)


def test_jitter_can_decide_whether_the_last_retry_happens() -> None:
    now = T0 + 3 * DAY - 9 * HOUR  # 10 h ±20 % is 8 h to 12 h

    assert next_attempt_at(9, T0, now, rand=lambda: 0.0) is not None
    assert next_attempt_at(9, T0, now, rand=middle) is None


def test_the_whole_schedule_retries_for_three_days_then_stops() -> None:
    now, attempt, attempts_at = T0, 1, [T0]
    while (at := next_attempt_at(attempt, T0, now, rand=middle)) is not None:
        now, attempt = at, attempt + 1
        attempts_at.append(at)

    assert attempts_at[-1] <= T0 + 3 * DAY
    assert attempts_at[-1] + 10 * HOUR > T0 + 3 * DAY
    # The first attempt, the 7 delays of the schedule (27.6 h), then 4 more 10 h apart.
    assert len(attempts_at) == 12


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_are_counted_from_one(attempt: int) -> None:
    with pytest.raises(ValueError):
        next_attempt_at(attempt, T0, T0)


@pytest.mark.parametrize(
    ("failing_for", "disabled"),
    [(0.0, False), (4 * DAY, False), (5 * DAY - 1, False), (5 * DAY, True), (30 * DAY, True)],
)
def test_an_endpoint_is_disabled_after_five_days_of_failing(
    failing_for: float, disabled: bool
) -> None:
    assert DISABLE_AFTER.total_seconds() == 5 * DAY
    assert should_disable(T0, T0 + failing_for) is disabled


def test_an_endpoint_that_is_not_failing_is_never_disabled() -> None:
    assert should_disable(None, T0 + 365 * DAY) is False


def test_an_attempt_may_take_five_seconds() -> None:
    assert ATTEMPT_TIMEOUT == 5.0
