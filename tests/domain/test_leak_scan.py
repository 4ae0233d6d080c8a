"""The leak finder: checksum-valid keys in text and in `git log -p` output, by hint only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from domain.key_format import Environment, KeyType, generate_key, hint_for, prefix_for
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


@pytest.mark.parametrize(
    "context",
    [
        "GET /callback?api_key%3D{key}&next=1",  # URL-encoded `=`: the key follows a `D`
        '"config": "line one\\n{key}\\nline three"',  # an escaped newline: follows an `n`
        "API_KEY_{key}",  # glued to a name with an underscore
        "export TOKEN={key}",
    ],
)
def test_a_key_right_after_a_word_character_is_found(context: str) -> None:
    key = generate_key(KeyType.SECRET, Environment.LIVE)
    (finding,) = find_keys([context.format(key=key)])
    assert finding.hint == hint_for(key)


def test_a_key_cut_from_a_longer_run_of_key_characters_is_not_a_candidate() -> None:
    key = generate_key(KeyType.SECRET, Environment.LIVE)
    assert list(find_keys([key + "x"])) == []


# -- the patterns published for scanners (docs/secret-scanning.md) -------------------------

SECRET_SCANNING_DOC = Path(__file__).parents[2] / "docs" / "secret-scanning.md"
_TABLE_ROW = re.compile(r"^\| (?:secret|public) key, (live|test) \| `(\w+)` \| `([^`]+)` \|$", re.M)


def _documented() -> tuple[dict[str, str], dict[str, Any]]:
    """The regular expression per prefix from the doc's table, and what the doc's Python
    snippet defines (run up to where it opens a file)."""
    text = SECRET_SCANNING_DOC.read_text()
    patterns = {prefix: regex for _, prefix, regex in _TABLE_ROW.findall(text)}
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(snippet.split("\ncandidates", 1)[0], namespace)  # our own doc's example
    return patterns, namespace


def test_the_documented_patterns_match_generated_keys_and_the_checksum_drops_a_typo() -> None:
    patterns, snippet = _documented()
    kinds = [(kind, env) for kind in KeyType for env in Environment]
    assert sorted(patterns) == sorted(prefix_for(kind, env) for kind, env in kinds)
    for kind, env in kinds:
        own = re.compile(patterns[prefix_for(kind, env)])
        for _ in range(200):
            key = generate_key(kind, env)
            for context in ("{key}", "x{key}", "?k%3D{key}&", "a\\n{key}", "KEY_{key}"):
                text = context.format(key=key)
                assert [m.group() for m in own.finditer(text)] == [key], text
                assert [m.group() for m in snippet["KEY"].finditer(text)] == [key], text
            assert snippet["checksum_ok"](key)
    key = generate_key(KeyType.SECRET, Environment.LIVE)
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert [m.group() for m in snippet["KEY"].finditer(f"token={typo}")] == [typo]
    assert not snippet["checksum_ok"](typo)
