"""The API key format: what a key looks like, and how every kind of wrong text is told apart.

A key is `ak_live_`/`ak_test_`/`pk_live_`/`pk_test_`, 27 base62 characters from the OS's
CSPRNG, and a 6-character base62 CRC32 of everything before it. Only its peppered HMAC is
stored; a hint (prefix and last four) is all that is shown after creation.
"""

from __future__ import annotations

import math
import secrets
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from domain.errors import ValidationError
from domain.key_format import (
    ALPHABET,
    CHECKSUM_LENGTH,
    KEY_LENGTH,
    KEY_PATTERN,
    PREFIX_LENGTH,
    RANDOM_LENGTH,
    Environment,
    KeyType,
    MalformedKey,
    generate_key,
    hash_key,
    hint_for,
    is_valid_key,
    parse_key,
    prefix_for,
)

PEPPER = b"a-server-side-pepper-of-32-bytes"

ALL_KINDS = [
    ("ak_live_", KeyType.SECRET, Environment.LIVE),
    ("ak_test_", KeyType.SECRET, Environment.TEST),
    ("pk_live_", KeyType.PUBLIC, Environment.LIVE),
    ("pk_test_", KeyType.PUBLIC, Environment.TEST),
]


def random_part(key: str) -> str:
    return key[PREFIX_LENGTH : PREFIX_LENGTH + RANDOM_LENGTH]


def reason_for(text: str) -> str:
    with pytest.raises(MalformedKey) as caught:
        parse_key(text)
    return caught.value.reason


A_KEY = generate_key(KeyType.SECRET, Environment.LIVE)


# -- generated keys ----------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "key_type", "env"), ALL_KINDS)
def test_a_generated_key_parses_back_with_its_type_and_environment(
    prefix: str, key_type: KeyType, env: Environment
) -> None:
    key = generate_key(key_type, env)

    parsed = parse_key(key)

    assert key.startswith(prefix)
    assert prefix_for(key_type, env) == prefix
    assert len(key) == KEY_LENGTH == 41
    assert (parsed.text, parsed.type, parsed.env) == (key, key_type, env)
    assert is_valid_key(key)


def test_the_random_part_carries_at_least_160_bits() -> None:
    assert len(ALPHABET) == len(set(ALPHABET)) == 62
    assert set(ALPHABET) == set(string.digits + string.ascii_letters)
    assert RANDOM_LENGTH * math.log2(len(ALPHABET)) >= 160


def test_generated_keys_draw_from_the_whole_alphabet_at_every_position() -> None:
    keys = [generate_key(KeyType.SECRET, Environment.LIVE) for _ in range(2000)]

    for key in keys:
        assert len(random_part(key)) == RANDOM_LENGTH
        assert set(random_part(key)) <= set(ALPHABET)
    # 2000 draws of 62 symbols: every symbol shows up overall, and many at each position.
    assert set("".join(random_part(k) for k in keys)) == set(ALPHABET)
    for position in range(RANDOM_LENGTH):
        assert len({random_part(k)[position] for k in keys}) > 55


def test_generated_keys_are_unique() -> None:
    keys = [generate_key(kind, env) for _, kind, env in ALL_KINDS for _ in range(5000)]

    assert len(set(keys)) == len(keys)
    assert len({random_part(k) for k in keys}) == len(keys)


def test_the_leak_pattern_finds_generated_keys_in_free_text() -> None:
    keys = [generate_key(kind, env) for _, kind, env in ALL_KINDS]
    text = "config:\n" + "\n".join(f'  token = "{k}"  # prod' for k in keys)

    assert KEY_PATTERN.findall(text) == keys


# -- precise rejection reasons ----------------------------------------------------------


def test_an_empty_key_is_rejected_as_empty() -> None:
    with pytest.raises(MalformedKey) as caught:
        parse_key("")

    assert caught.value.reason == "empty"
    assert caught.value.code == "malformed_api_key"
    assert isinstance(caught.value, ValidationError)


@pytest.mark.parametrize(
    "text",
    [
        "sk_live_" + A_KEY[PREFIX_LENGTH:],
        "ak_prod_" + A_KEY[PREFIX_LENGTH:],
        "ak-live-" + A_KEY[PREFIX_LENGTH:],
        "AK_LIVE_" + A_KEY[PREFIX_LENGTH:],
        "ak_livex" + A_KEY[PREFIX_LENGTH:],
        "Bearer " + A_KEY,
        " " + A_KEY,
        "ak",
        "ak_live",
        "hello world",
    ],
)
def test_a_key_with_an_unknown_prefix_is_rejected_as_unknown_prefix(text: str) -> None:
    assert reason_for(text) == "unknown_prefix"


@pytest.mark.parametrize("length", [PREFIX_LENGTH, PREFIX_LENGTH + 1, KEY_LENGTH - 1])
def test_a_truncated_key_is_rejected_as_wrong_length(length: int) -> None:
    with pytest.raises(MalformedKey) as caught:
        parse_key(A_KEY[:length])

    assert caught.value.reason == "wrong_length"
    assert "truncated" in caught.value.message


@pytest.mark.parametrize("extra", ["x", "\n", " ", A_KEY])
def test_a_key_with_extra_characters_is_rejected_as_wrong_length(extra: str) -> None:
    assert reason_for(A_KEY + extra) == "wrong_length"


@pytest.mark.parametrize("bad", ["-", "_", "+", "/", "=", " ", "é", "\uff10", "\x00"])
def test_a_key_with_characters_outside_base62_is_rejected_as_invalid_characters(
    bad: str,
) -> None:
    for position in (PREFIX_LENGTH, PREFIX_LENGTH + 13, KEY_LENGTH - 1):
        text = A_KEY[:position] + bad + A_KEY[position + 1 :]

        assert reason_for(text) == "invalid_characters"


@pytest.mark.parametrize("position", range(PREFIX_LENGTH, KEY_LENGTH))
def test_a_single_character_typo_after_the_prefix_is_a_checksum_mismatch(position: int) -> None:
    original = A_KEY[position]
    for replacement in ALPHABET.replace(original, ""):
        typo = A_KEY[:position] + replacement + A_KEY[position + 1 :]

        assert reason_for(typo) == "checksum_mismatch"


@pytest.mark.parametrize("position", range(PREFIX_LENGTH))
def test_a_single_character_typo_in_the_prefix_is_rejected(position: int) -> None:
    for replacement in set(ALPHABET + "_-") - {A_KEY[position]}:
        typo = A_KEY[:position] + replacement + A_KEY[position + 1 :]

        assert reason_for(typo) in {"unknown_prefix", "checksum_mismatch"}


def test_swapping_a_secret_prefix_for_a_public_one_is_a_checksum_mismatch() -> None:
    """The checksum covers the prefix: a secret key cannot pass as a public one."""
    assert reason_for("pk" + A_KEY[2:]) == "checksum_mismatch"
    assert reason_for(A_KEY[:3] + "test" + A_KEY[7:]) == "checksum_mismatch"


def test_a_random_string_shaped_like_a_key_is_a_checksum_mismatch() -> None:
    for _ in range(2000):
        text = "ak_live_" + "".join(secrets.choice(ALPHABET) for _ in range(33))

        assert reason_for(text) == "checksum_mismatch"


@given(
    position=st.integers(min_value=0, max_value=KEY_LENGTH - 1),
    replacement=st.characters(),
)
def test_any_single_character_substitution_is_rejected(position: int, replacement: str) -> None:
    assume(replacement != A_KEY[position])
    typo = A_KEY[:position] + replacement + A_KEY[position + 1 :]

    assert not is_valid_key(typo)
    with pytest.raises(MalformedKey):
        parse_key(typo)


@given(st.text())
def test_random_text_never_parses(text: str) -> None:
    with pytest.raises(MalformedKey) as caught:
        parse_key(text)

    assert caught.value.reason in {
        "empty",
        "unknown_prefix",
        "wrong_length",
        "invalid_characters",
        "checksum_mismatch",
    }


@given(st.from_regex(r"[ap]k_(live|test)_[0-9A-Za-z]{33}", fullmatch=True))
def test_random_text_in_the_key_shape_never_parses(text: str) -> None:
    assert reason_for(text) == "checksum_mismatch"


# -- hashing and hints --------------------------------------------------------------------


def test_the_hash_is_an_hmac_that_depends_on_the_pepper() -> None:
    stored = hash_key(A_KEY, PEPPER)

    assert stored == hash_key(A_KEY, PEPPER)
    assert stored != hash_key(A_KEY, b"another-pepper-of-the-same-size")
    assert len(stored) == 64
    assert set(stored) <= set(string.hexdigits.lower())


def test_the_hash_is_not_the_key_and_does_not_contain_it() -> None:
    stored = hash_key(A_KEY, PEPPER)

    assert A_KEY not in stored
    assert random_part(A_KEY) not in stored
    assert hash_key(generate_key(KeyType.SECRET, Environment.LIVE), PEPPER) != stored


def test_the_hint_shows_only_the_prefix_and_the_last_four_characters() -> None:
    hint = hint_for(A_KEY)

    assert hint == f"ak_live_…{A_KEY[-4:]}"
    assert parse_key(A_KEY).hint == hint
    # The four shown characters are the checksum's: no random character is revealed.
    assert CHECKSUM_LENGTH >= 4
    assert A_KEY[-4:] == A_KEY[-CHECKSUM_LENGTH:][-4:]
    assert random_part(A_KEY) not in hint


@pytest.mark.parametrize(("prefix", "key_type", "env"), ALL_KINDS)
def test_the_hint_names_the_kind_of_key(prefix: str, key_type: KeyType, env: Environment) -> None:
    key = generate_key(key_type, env)

    assert hint_for(key).startswith(prefix)
    assert hint_for(key).endswith(key[-4:])
