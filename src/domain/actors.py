"""Who did something: every lifecycle event records its actor as a short string.

Forms: `operator` (the CLI), `system` (workers), `user:usr_…` (dashboard), `key:key_…` (API).
"""

from __future__ import annotations

from uuid import UUID

from domain.ids import USER_PREFIX, format_id, format_key_id

OPERATOR = "operator"
SYSTEM = "system"


def by_key(key_id: UUID) -> str:
    return f"key:{format_key_id(key_id)}"


def by_user(user_id: UUID) -> str:
    return f"user:{format_id(USER_PREFIX, user_id)}"
