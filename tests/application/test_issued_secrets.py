"""A key's plaintext, handed out once, never shows in a repr (logs and errors print those)."""

from __future__ import annotations

from typing import Any, cast

from application.key_management import NewKey
from application.registry import IssuedKey
from domain.key_format import Environment, KeyType, generate_key

SECRET = generate_key(KeyType.SECRET, Environment.TEST)


def test_an_issued_keys_repr_leaves_its_secret_out() -> None:
    issued = IssuedKey(key=cast(Any, "the key"), secret=SECRET)
    assert SECRET not in repr(issued)
    assert issued.secret == SECRET


def test_a_new_keys_repr_leaves_its_secret_out() -> None:
    new = NewKey(record=cast(Any, "the record"), secret=SECRET)
    assert SECRET not in repr(new)
    assert new.secret == SECRET
