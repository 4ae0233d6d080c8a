"""Finding API keys in text: candidates by pattern, kept only when the checksum holds.

Pure (no I/O): the `icodrip scan` command feeds it files and `git log -p` output. A finding
holds the key's hint and its SHA-256 (to tell findings of one key apart), never the key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from domain.key_format import KEY_PATTERN, MalformedKey, parse_key


@dataclass(frozen=True, slots=True)
class Finding:
    """One valid key found at `line` (1-based) of some text."""

    line: int
    hint: str
    type: str
    env: str
    fingerprint: str  # sha256 hex of the key: the same key gives the same fingerprint


def find_keys_in_line(text: str, line: int) -> Iterator[Finding]:
    """Every checksum-valid key in one line of text."""
    if "k_" not in text:  # cheap pre-filter: every key contains `ak_` or `pk_`
        return
    for match in KEY_PATTERN.finditer(text):
        try:
            parsed = parse_key(match.group(0))
        except MalformedKey:
            continue
        yield Finding(
            line=line,
            hint=parsed.hint,
            type=parsed.type.value,
            env=parsed.env.value,
            fingerprint=hashlib.sha256(parsed.text.encode()).hexdigest(),
        )


def find_keys(lines: Iterable[str]) -> Iterator[Finding]:
    """Every checksum-valid key in these lines (numbered from 1)."""
    for number, text in enumerate(lines, start=1):
        yield from find_keys_in_line(text, number)


@dataclass(frozen=True, slots=True)
class HistoryFinding:
    """A key added by a commit: where it was added, in the file as of that commit."""

    commit: str
    path: str
    finding: Finding


_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


#: The `--format` that `find_keys_in_patches` expects: a NUL, then the commit id.
GIT_LOG_FORMAT = "--format=%x00%H"


def find_keys_in_patches(lines: Iterable[str]) -> Iterator[HistoryFinding]:
    """Keys in the lines added by `git log -p --format=%x00%H` output.

    Each commit starts with a line of a NUL and its id (a diff line never starts with a NUL).
    Only added lines count: a key that a later commit deletes is still found in the commit
    that added it, at its line number in that commit's version of the file.
    """
    commit = ""
    path = ""
    new_line = 0
    in_hunk = False
    for raw in lines:
        text = raw.rstrip("\n")
        if text.startswith("\x00"):
            commit = text[1:].strip()
            in_hunk = False
            continue
        if text.startswith("diff --git "):
            in_hunk = False
            path = ""
            continue
        if not in_hunk and text.startswith("+++ "):
            target = text[4:]
            path = target[2:] if target.startswith("b/") else target
            continue
        hunk = _HUNK.match(text)
        if hunk:
            new_line = int(hunk.group(1))
            in_hunk = True
            continue
        if not in_hunk:
            continue
        if text.startswith("+"):
            for finding in find_keys_in_line(text[1:], new_line):
                yield HistoryFinding(commit, path, finding)
            new_line += 1
        elif text.startswith(" "):
            new_line += 1
        elif not text.startswith(("-", "\\")):
            in_hunk = False
