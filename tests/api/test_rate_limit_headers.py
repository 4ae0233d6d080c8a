"""The rate-limit headers: the X-RateLimit trio, the IETF draft fields, Retry-After on 429."""

from __future__ import annotations

import dataclasses

from api.rate_limit_headers import rate_limit_headers
from domain.rate_limits import PER_ADDRESS, decide

MINUTE = 1_700_000_040  # a multiple of 60


def test_an_admitted_hit_carries_limit_remaining_and_reset() -> None:
    headers = rate_limit_headers(decide(58, 100, MINUTE + 43), MINUTE + 43)

    assert headers["X-RateLimit-Limit"] == "100"
    assert headers["X-RateLimit-Remaining"] == "42"
    assert headers["X-RateLimit-Reset"] == str(MINUTE + 60)


def test_the_draft_fields_name_the_policy_quota_window_remaining_and_seconds_to_reset() -> None:
    headers = rate_limit_headers(decide(58, 100, MINUTE + 43), MINUTE + 43)

    assert headers["RateLimit-Policy"] == '"per-key";q=100;w=60'
    assert headers["RateLimit"] == '"per-key";r=42;t=17'


def test_an_admitted_hit_has_no_retry_after() -> None:
    headers = rate_limit_headers(decide(1, 100, MINUTE), MINUTE)

    assert "Retry-After" not in headers
    assert set(headers) == {
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "RateLimit-Policy",
        "RateLimit",
    }


def test_a_refused_hit_carries_retry_after_in_seconds_until_the_reset() -> None:
    headers = rate_limit_headers(decide(101, 100, MINUTE + 42.5), MINUTE + 42.5)

    assert headers["Retry-After"] == "18"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert headers["RateLimit"] == '"per-key";r=0;t=18'


def test_retry_after_is_at_least_one_second_even_at_the_window_edge() -> None:
    decision = decide(2, 1, MINUTE + 59.9)

    assert rate_limit_headers(decision, MINUTE + 60.2)["Retry-After"] == "1"
    assert rate_limit_headers(decision, MINUTE + 60.2)["RateLimit"] == '"per-key";r=0;t=0'


def test_a_custom_limit_shows_in_both_header_families() -> None:
    headers = rate_limit_headers(decide(1, 5000, MINUTE), MINUTE)

    assert headers["X-RateLimit-Limit"] == "5000"
    assert headers["RateLimit-Policy"] == '"per-key";q=5000;w=60'


def test_a_decision_of_the_per_address_policy_is_named_so_in_both_draft_fields() -> None:
    decision = dataclasses.replace(decide(61, 60, MINUTE + 43), policy=PER_ADDRESS)
    headers = rate_limit_headers(decision, MINUTE + 43)

    assert headers["RateLimit-Policy"] == '"per-address";q=60;w=60'
    assert headers["RateLimit"] == '"per-address";r=0;t=17'
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("60", "0")
