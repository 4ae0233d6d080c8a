"""Redaction: a checksum-valid key in client-supplied text (a path, a User-Agent, an error
message echoing a body), whole or cut inside its checksum, becomes its hint before the text is
stored, logged or echoed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.key_format import (
    CHECKSUM_LENGTH,
    PREFIX_LENGTH,
    RANDOM_LENGTH,
    Environment,
    KeyType,
    generate_key,
    hint_for,
    redact_keys,
)

KEYS = [generate_key(t, e) for t in KeyType for e in Environment]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(
    "template",
    [
        "/v1/affiliates/{}",
        "/v1/affiliates/{}/more",
        "curl/8.0 (key {})",
        "Bearer{}",  # glued to a word before it
        "{}xyz",  # and to word characters after it
        "env: Invalid enum value '{}'",
        "{}",
    ],
)
def test_a_valid_key_anywhere_in_text_is_replaced_by_its_hint(key: str, template: str) -> None:
    redacted = redact_keys(template.format(key))
    assert redacted == template.format(hint_for(key))
    assert key[PREFIX_LENGTH : PREFIX_LENGTH + RANDOM_LENGTH] not in redacted


def test_every_key_in_the_text_is_redacted() -> None:
    text = " / ".join(KEYS * 2)
    assert redact_keys(text) == " / ".join(map(hint_for, KEYS * 2))


@pytest.mark.parametrize("cut", range(CHECKSUM_LENGTH))
def test_a_key_cut_inside_its_checksum_is_still_redacted(cut: int) -> None:
    """A message quoting `value[:40]` keeps the random part; the checksum follows from it."""
    key = KEYS[0]
    shortened = key[: len(key) - CHECKSUM_LENGTH + cut]
    redacted = redact_keys(f"unknown permission '{shortened}'")
    assert redacted == f"unknown permission '{hint_for(key)}'"


def test_text_without_a_valid_key_is_returned_unchanged() -> None:
    key = KEYS[0]
    typo = key[:-1] + ("x" if key[-1] != "x" else "y")
    wrong_start = key[:-CHECKSUM_LENGTH] + ("x" if key[-CHECKSUM_LENGTH] != "x" else "y")
    for text in ["", "/v1/affiliates", "ak_live_", "desk_lamp", typo, wrong_start, hint_for(key)]:
        assert redact_keys(text) is text


def test_a_key_shaped_run_just_before_a_key_does_not_hide_it() -> None:
    key = KEYS[0]
    for filler in range(25, 34):
        decoy = "ak_live_" + "A" * filler  # with the key's first letters, 33 characters long
        assert redact_keys(decoy + key) == decoy + hint_for(key)


def test_redacting_twice_changes_nothing_more() -> None:
    once = redact_keys(f"/v1/x/{KEYS[0]}?{KEYS[1]}")
    assert redact_keys(once) == once


@given(before=st.text(max_size=40), after=st.text(max_size=40), which=st.sampled_from(KEYS))
def test_no_surrounding_text_hides_a_key(before: str, after: str, which: str) -> None:
    redacted = redact_keys(before + which + after)
    assert which not in redacted
    assert which[PREFIX_LENGTH : PREFIX_LENGTH + RANDOM_LENGTH] not in redacted
