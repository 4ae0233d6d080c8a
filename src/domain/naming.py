"""Names people give to organizations and keys."""

from __future__ import annotations

from domain.errors import ValidationError

MAX_NAME_LENGTH = 100


def clean_name(name: str, what: str = "name") -> str:
    """The name with surrounding spaces removed, or ValidationError if it is unusable."""
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ValidationError(f"{what} must be 1 to {MAX_NAME_LENGTH} characters, got {len(name)}")
    if not name.isprintable():
        raise ValidationError(f"{what} must contain printable characters only")
    return name
