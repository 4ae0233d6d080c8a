"""Dashboard users' passwords: the rules and their hashing (argon2id)."""

from __future__ import annotations

import argon2

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024

_hasher = argon2.PasswordHasher()  # argon2id with the library's (RFC 9106) defaults
#: Verified against when no user has the email, so both cases take the same time.
_DUMMY_HASH = _hasher.hash("icodrip-no-such-user")


def password_problem(password: str) -> str | None:
    """Why this password is refused, or None when it is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"a password may have at most {MAX_PASSWORD_LENGTH} characters"
    return None


def hash_password(password: str) -> str:
    """The argon2id hash of `password` (salted; the text encodes its own parameters)."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; None (no such user) costs the same and is False."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False
