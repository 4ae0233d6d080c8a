"""The leak finder: checksum-valid keys in text and in `git log -p` output, by hint only."""

from __future__ import annotations

from domain.key_format import Environment, KeyType, generate_key, hint_for
from domain.leak_scan import find_keys, find_keys_in_patches


def test_a_valid_key_in_text_is_found_with_its_line_and_hint() -> None:
    key = generate_key(KeyType.SECRET, Environment.LIVE)
    (finding,) = find_keys(["first line", f'API_KEY = "{key}"'])
    assert (finding.line, finding.hint, finding.type, finding.env) == (
        2,
        hint_for(key),
        "secret",
        "live",
    )


def test_a_key_like_string_with_a_bad_checksum_is_not_reported() -> None:
    key = generate_key(KeyType.SECRET, Environment.LIVE)
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert list(find_keys([f"token: {typo}"])) == []


def test_a_finding_never_holds_the_key() -> None:
    key = generate_key(KeyType.PUBLIC, Environment.TEST)
    (finding,) = find_keys([key])
    assert key not in repr(finding)


def test_keys_added_in_a_patch_are_found_at_their_new_line_numbers() -> None:
    key = generate_key(KeyType.SECRET, Environment.TEST)
    patch = [
        "\x00" + "a" * 40,
        "diff --git a/config.py b/config.py",
        "--- a/config.py",
        "+++ b/config.py",
        "@@ -1,2 +1,3 @@",
        " import os",
        f"+KEY = '{key}'",
        " DEBUG = False",
    ]
    (found,) = find_keys_in_patches(patch)
    assert (found.commit, found.path, found.finding.line) == ("a" * 40, "config.py", 2)


def test_a_removed_line_is_not_reported_as_a_new_finding() -> None:
    key = generate_key(KeyType.SECRET, Environment.TEST)
    patch = [
        "\x00" + "b" * 40,
        "diff --git a/config.py b/config.py",
        "--- a/config.py",
        "+++ b/config.py",
        "@@ -1,2 +1,1 @@",
        f"-KEY = '{key}'",
        " DEBUG = False",
    ]
    assert list(find_keys_in_patches(patch)) == []
