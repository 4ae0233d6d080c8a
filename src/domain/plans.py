"""Plans, the permissions their keys inherit, and per-key rate limits."""

from __future__ import annotations

from enum import StrEnum

from domain.errors import ValidationError

DEFAULT_RATE_LIMIT_PER_MINUTE = 100
MAX_CUSTOM_RATE_LIMIT_PER_MINUTE = 10_000_000


class Permission(StrEnum):
    AFFILIATES_READ = "affiliates:read"
    AFFILIATES_WRITE = "affiliates:write"
    API_KEYS_READ = "api_keys:read"
    API_KEYS_WRITE = "api_keys:write"
    EVENTS_READ = "events:read"
    EVENTS_WRITE = "events:write"
    AUDIT_READ = "audit:read"
    USAGE_READ = "usage:read"
    WEBHOOKS_READ = "webhooks:read"
    WEBHOOKS_WRITE = "webhooks:write"


def permission_names(permissions: frozenset[Permission]) -> str:
    """The permissions named in a sentence, sorted: `api_keys:read, audit:read`."""
    return ", ".join(sorted(p.value for p in permissions))


class Plan(StrEnum):
    FREE = "free"
    PRO = "pro"
    AGENCY = "agency"


_FREE = frozenset(
    {
        Permission.AFFILIATES_READ,
        Permission.AFFILIATES_WRITE,
        Permission.API_KEYS_READ,
        Permission.API_KEYS_WRITE,
        Permission.EVENTS_READ,
        Permission.EVENTS_WRITE,
        Permission.USAGE_READ,
        Permission.WEBHOOKS_READ,
        Permission.WEBHOOKS_WRITE,
    }
)
_PRO = _FREE | {Permission.AUDIT_READ}

PLAN_PERMISSIONS: dict[Plan, frozenset[Permission]] = {
    Plan.FREE: _FREE,
    Plan.PRO: _PRO,
    Plan.AGENCY: _PRO,
}

#: Public keys are for browsers and SDKs: they may only send tracking events (not read them:
#: what a page's visitors sent is the organization's, read with a secret key).
PUBLIC_KEY_PERMISSIONS = frozenset({Permission.EVENTS_WRITE})


def effective_permissions(
    plan_permissions: frozenset[Permission],
    restriction: frozenset[Permission] | None,
    public: bool,
) -> frozenset[Permission]:
    """What a key may do: its org plan's permissions, narrowed by its restriction and type."""
    allowed = plan_permissions if restriction is None else plan_permissions & restriction
    return allowed & PUBLIC_KEY_PERMISSIONS if public else allowed


def parse_plan(text: str) -> Plan:
    """The plan named `text`, or ValidationError listing the valid ones."""
    try:
        return Plan(text)
    except ValueError:
        valid = ", ".join(p.value for p in Plan)
        raise ValidationError(f"unknown plan {text[:40]!r}: expected one of {valid}") from None


def parse_permissions(values: list[str] | tuple[str, ...]) -> frozenset[Permission]:
    """Permissions named in `values`, or ValidationError naming the unknown one."""
    result = set()
    for value in values:
        try:
            result.add(Permission(value))
        except ValueError:
            valid = ", ".join(p.value for p in Permission)
            raise ValidationError(
                f"unknown permission {value[:40]!r}: expected some of {valid}"
            ) from None
    return frozenset(result)
