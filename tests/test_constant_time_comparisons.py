"""Secrets and values derived from them are compared in constant time, never with `==`.

A code review kept as a test: no `==`/`!=` in `src/` has an operand named like a secret, a
signature, a checksum or a key hash, and the places that do compare such values use
`hmac.compare_digest`. (Looking a key's HMAC up in a dict or an index is not a comparison an
attacker can time usefully: without the pepper, they cannot choose the HMAC they probe.)
Audit-chain hashes (`row_hash`, `prev_hash`) are public tamper evidence, not secrets.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
SECRET_LIKE = re.compile(
    r"(secret|token|password|signature|pepper|checksum|digest|key_hash|\bmac\b|\bsig\b)", re.I
)
#: Comparisons of the key *type* (`KeyType.SECRET`) are about no secret at all, nor are those
#: of a token's length (every valid token has the same, public length).
NOT_A_SECRET = re.compile(r"KeyType\.SECRET|== *['\"]secret['\"]|\.type\b|^len\(\w+\) !?= ")


def _comparisons() -> list[tuple[str, str]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
            ):
                text = ast.unparse(node)
                if SECRET_LIKE.search(text) and not NOT_A_SECRET.search(text):
                    found.append((f"{path.relative_to(SRC)}:{node.lineno}", text))
    return found


def test_no_secret_like_value_is_compared_with_equals() -> None:
    assert _comparisons() == []


def test_the_key_checksum_is_compared_with_compare_digest() -> None:
    source = (SRC / "domain" / "key_format.py").read_text()
    assert "hmac.compare_digest(_checksum(" in source
