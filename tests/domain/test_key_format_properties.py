"""Properties of the key parser under arbitrary input: it answers a ParsedKey or MalformedKey and
nothing else, round-trips every key it could have issued, and refuses every single-character
change, deletion, insertion, adjacent swap and truncation of a valid key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.key_format import (
    ALPHABET,
    KEY_LENGTH,
    PREFIX_LENGTH,
    RANDOM_LENGTH,
    Environment,
    KeyType,
    MalformedKey,
    ParsedKey,
    _checksum,
    hint_for,
    is_valid_key,
    parse_key,
    prefix_for,
)

KINDS = [(t, e) for t in KeyType for e in Environment]


@st.composite
def keys(draw: st.DrawFn) -> tuple[str, KeyType, Environment]:
    """A key the service could issue: any kind, any random part, its checksum."""
    key_type, env = draw(st.sampled_from(KINDS))
    random_part = draw(st.text(alphabet=ALPHABET, min_size=RANDOM_LENGTH, max_size=RANDOM_LENGTH))
    body = prefix_for(key_type, env) + random_part
    return body + _checksum(body), key_type, env


def refused(text: str) -> bool:
    try:
        parse_key(text)
    except MalformedKey:
        return True
    return False


@given(st.one_of(st.text(), st.text(alphabet=ALPHABET + "_akptestliv", max_size=60)))
def test_any_text_parses_or_raises_malformed_key_only(text: str) -> None:
    try:
        parsed = parse_key(text)
    except MalformedKey as error:
        assert error.code == "malformed_api_key"
        assert error.reason in {
            "empty",
            "unknown_prefix",
            "wrong_length",
            "invalid_characters",
            "checksum_mismatch",
        }
        assert error.message
        assert not is_valid_key(text)
    else:
        assert isinstance(parsed, ParsedKey)
        assert is_valid_key(text)


@given(st.binary(max_size=60))
def test_any_bytes_decoded_leniently_parse_or_raise_malformed_key_only(raw: bytes) -> None:
    text = raw.decode("utf-8", errors="surrogateescape")
    with pytest.raises(MalformedKey):
        parse_key(text)


@given(keys())
def test_every_issuable_key_round_trips_with_its_kind(
    key: tuple[str, KeyType, Environment],
) -> None:
    text, key_type, env = key
    parsed = parse_key(text)
    assert (parsed.text, parsed.type, parsed.env) == (text, key_type, env)
    assert parsed.hint == hint_for(text)
    assert parse_key(parsed.text) == parsed


@given(keys(), st.data())
def test_any_single_character_substitution_is_refused(
    key: tuple[str, KeyType, Environment], data: st.DataObject
) -> None:
    text = key[0]
    position = data.draw(st.integers(0, KEY_LENGTH - 1))
    replacement = data.draw(st.characters().filter(lambda c: c != text[position]))
    assert refused(text[:position] + replacement + text[position + 1 :])


@given(keys(), st.data())
def test_any_truncation_is_refused(
    key: tuple[str, KeyType, Environment], data: st.DataObject
) -> None:
    text = key[0]
    length = data.draw(st.integers(0, KEY_LENGTH - 1))
    assert refused(text[:length])
    assert refused(text[KEY_LENGTH - length :])  # cut from the front, too


@given(keys(), st.data())
def test_any_single_character_deletion_or_insertion_is_refused(
    key: tuple[str, KeyType, Environment], data: st.DataObject
) -> None:
    text = key[0]
    position = data.draw(st.integers(0, KEY_LENGTH - 1))
    assert refused(text[:position] + text[position + 1 :])
    inserted = data.draw(st.characters())
    assert refused(text[:position] + inserted + text[position:])


@given(keys(), st.data())
def test_any_swap_of_two_different_adjacent_characters_is_refused(
    key: tuple[str, KeyType, Environment], data: st.DataObject
) -> None:
    text = key[0]
    position = data.draw(st.integers(PREFIX_LENGTH, KEY_LENGTH - 2))
    if text[position] == text[position + 1]:
        return
    swapped = text[:position] + text[position + 1] + text[position] + text[position + 2 :]
    assert refused(swapped)


@given(keys())
def test_surrounding_whitespace_is_not_part_of_a_key(key: tuple[str, KeyType, Environment]) -> None:
    """The parser takes the key exactly; trimming is the Authorization header's business."""
    assert refused(" " + key[0])
    assert refused(key[0] + "\n")
