"""Public identifiers: a type prefix plus the aggregate's UUID, e.g. `key_0f3c…`.

The prefix lets a person (and a parser) tell an org id from a key id at a glance.
"""

from __future__ import annotations

from uuid import UUID

from domain.errors import ValidationError

ORG_PREFIX = "org_"
KEY_PREFIX = "key_"
USER_PREFIX = "usr_"
WEBHOOK_PREFIX = "we_"


def format_id(prefix: str, value: UUID) -> str:
    """The public form of an aggregate id."""
    return f"{prefix}{value.hex}"


def parse_id(prefix: str, text: str) -> UUID:
    """The UUID inside a public id, or ValidationError naming what is wrong."""
    what = {
        ORG_PREFIX: "organization",
        KEY_PREFIX: "API key",
        USER_PREFIX: "user",
        WEBHOOK_PREFIX: "webhook endpoint",
    }[prefix]
    if not text.startswith(prefix) or len(text) != len(prefix) + 32:
        raise ValidationError(
            f"malformed {what} id {text[:60]!r}: expected {prefix}<32 hex digits>"
        )
    try:
        return UUID(hex=text[len(prefix) :])
    except ValueError:
        raise ValidationError(f"malformed {what} id {text[:60]!r}: not hexadecimal") from None


def format_org_id(value: UUID) -> str:
    return format_id(ORG_PREFIX, value)


def format_key_id(value: UUID) -> str:
    return format_id(KEY_PREFIX, value)


def parse_org_id(text: str) -> UUID:
    return parse_id(ORG_PREFIX, text)


def parse_key_id(text: str) -> UUID:
    return parse_id(KEY_PREFIX, text)


def format_webhook_id(value: UUID) -> str:
    return format_id(WEBHOOK_PREFIX, value)


def parse_webhook_id(text: str) -> UUID:
    return parse_id(WEBHOOK_PREFIX, text)
