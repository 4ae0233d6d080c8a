"""The access policy: who may do what to which key. These rules are written here only.

Every command of the service is a `Command`; every caller is an actor (`domain.actors`). The
service layer asks `authorize` before it runs a command, with the facts of the key the command
touches (`KeyFacts`) and of the key it would issue (`KeyGrant`); the API's guard asks it for
each route, and pages ask `allows` to decide what to offer. docs/adr/0012 tells why.

1. Another organization's keys do not exist for an actor: NotFound, never a 403.
2. Test mode sees test mode only: a test key neither sees nor touches a live key.
3. A key needs the command's permission, and never obtains, creates or changes a key with
   more than it has itself (environment and permissions).
4. A dashboard user acts within its role and its organization's plan; a developer changes
   only the keys it created and reads the others.
5. The operator (the command line) and the system (workers) may do anything.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from uuid import UUID

from domain.access_facts import KeyFacts, KeyGrant, Limits, WebhookFacts, WebhookGrant, key_actor
from domain.actors import Actor, KeyActor, Operator, System, UserActor
from domain.errors import NotAllowed, NotFound, PermissionExceeded
from domain.key_format import Environment
from domain.plans import Permission, permission_names
from domain.roles import Role
from domain.webhook import KEY_EVENTS as KEY_OBJECT_EVENTS

__all__ = [
    "Command",
    "KeyFacts",
    "KeyGrant",
    "Limits",
    "WebhookFacts",
    "WebhookGrant",
    "allows",
    "authorize",
    "inherited_limits",
    "key_actor",
    "sees",
    "visible_envs",
]


class Command(StrEnum):
    """Everything an actor can ask of the service."""

    READ_KEYS = "read_keys"
    CREATE_KEY = "create_key"
    RENAME_KEY = "rename_key"
    SET_KEY_ALLOWED_IPS = "set_key_allowed_ips"
    ROLL_KEY = "roll_key"
    REVOKE_KEY = "revoke_key"
    READ_AUDIT = "read_audit"
    READ_USAGE = "read_usage"
    READ_AFFILIATES = "read_affiliates"
    WRITE_AFFILIATES = "write_affiliates"
    SEND_EVENTS = "send_events"
    READ_EVENTS = "read_events"
    READ_WEBHOOKS = "read_webhooks"
    MANAGE_WEBHOOKS = "manage_webhooks"
    READ_KEY_POLICY = "read_key_policy"
    SET_KEY_POLICY = "set_key_policy"
    MANAGE_ORGANIZATION = "manage_organization"
    MANAGE_USERS = "manage_users"


#: The permission a key needs for each command; a user's organization plan must grant it too.
#: None: no key and no user may (plans, limits and people are the operator's).
PERMISSION: dict[Command, Permission | None] = {
    Command.READ_KEYS: Permission.API_KEYS_READ,
    Command.CREATE_KEY: Permission.API_KEYS_WRITE,
    Command.RENAME_KEY: Permission.API_KEYS_WRITE,
    Command.SET_KEY_ALLOWED_IPS: Permission.API_KEYS_WRITE,
    Command.ROLL_KEY: Permission.API_KEYS_WRITE,
    Command.REVOKE_KEY: Permission.API_KEYS_WRITE,
    Command.READ_AUDIT: Permission.AUDIT_READ,
    Command.READ_USAGE: Permission.USAGE_READ,
    Command.READ_AFFILIATES: Permission.AFFILIATES_READ,
    Command.WRITE_AFFILIATES: Permission.AFFILIATES_WRITE,
    Command.SEND_EVENTS: Permission.EVENTS_WRITE,
    Command.READ_EVENTS: Permission.EVENTS_READ,
    Command.READ_WEBHOOKS: Permission.WEBHOOKS_READ,
    Command.MANAGE_WEBHOOKS: Permission.WEBHOOKS_WRITE,
    Command.READ_KEY_POLICY: Permission.API_KEYS_READ,
    Command.SET_KEY_POLICY: Permission.API_KEYS_WRITE,
    Command.MANAGE_ORGANIZATION: None,
    Command.MANAGE_USERS: None,
}

#: Commands that change an existing key.
KEY_CHANGES = frozenset(
    {Command.RENAME_KEY, Command.SET_KEY_ALLOWED_IPS, Command.ROLL_KEY, Command.REVOKE_KEY}
)

_READS = frozenset(
    {
        Command.READ_KEYS,
        Command.READ_AUDIT,
        Command.READ_USAGE,
        Command.READ_WEBHOOKS,
        Command.READ_KEY_POLICY,
    }
)
_DASHBOARD = (
    _READS | {Command.CREATE_KEY, Command.MANAGE_WEBHOOKS, Command.SET_KEY_POLICY} | KEY_CHANGES
)
#: What each role may do to any key of its organization.
ROLE_COMMANDS: dict[Role, frozenset[Command]] = {
    Role.OWNER: _DASHBOARD,
    Role.ADMIN: _DASHBOARD,
    Role.DEVELOPER: _READS | {Command.CREATE_KEY},
    Role.AUDITOR: _READS,
}
#: What a role may do, beyond `ROLE_COMMANDS`, to the keys it created itself.
OWN_KEY_COMMANDS: dict[Role, frozenset[Command]] = {Role.DEVELOPER: KEY_CHANGES}

_WHAT = {
    Command.READ_KEYS: "view API keys",
    Command.CREATE_KEY: "create API keys",
    Command.RENAME_KEY: "rename this API key",
    Command.SET_KEY_ALLOWED_IPS: "change this API key's allowed IPs",
    Command.ROLL_KEY: "roll this API key",
    Command.REVOKE_KEY: "revoke this API key",
    Command.READ_AUDIT: "view the audit log",
    Command.READ_USAGE: "view usage",
    Command.READ_AFFILIATES: "read affiliates",
    Command.WRITE_AFFILIATES: "add affiliates",
    Command.SEND_EVENTS: "send tracking events",
    Command.READ_EVENTS: "view tracked events",
    Command.READ_WEBHOOKS: "view webhooks",
    Command.MANAGE_WEBHOOKS: "manage webhooks",
    Command.READ_KEY_POLICY: "view the organization's key policy",
    Command.SET_KEY_POLICY: "change the organization's key policy",
    Command.MANAGE_ORGANIZATION: "change the organization's plan or limits",
    Command.MANAGE_USERS: "manage dashboard users",
}
_VERB = {
    Command.RENAME_KEY: "rename",
    Command.SET_KEY_ALLOWED_IPS: "change the allowed IPs of",
    Command.ROLL_KEY: "roll",
    Command.REVOKE_KEY: "revoke",
}


#: Permissions a role may not put in a key it issues: a developer changes only its own keys and
#: no webhook, so it must not mint a key that changes anyone's keys or any webhook.
ROLE_WITHHOLDS: dict[Role, frozenset[Permission]] = {
    Role.DEVELOPER: frozenset({Permission.API_KEYS_WRITE, Permission.WEBHOOKS_WRITE}),
}


def visible_envs(actor: Actor) -> frozenset[Environment]:
    """The environments whose keys and data `actor` may see."""
    if isinstance(actor, KeyActor) and actor.env == Environment.TEST:
        return frozenset({Environment.TEST})
    return frozenset(Environment)


def sees(actor: Actor, key: KeyFacts | WebhookFacts) -> bool:
    """Whether a key (or webhook endpoint) exists at all for `actor` (its organization, its
    environment)."""
    if isinstance(actor, Operator | System):
        return True
    return key.org_id == actor.org_id and key.env in visible_envs(actor)


def inherited_limits(
    actor: Actor, plan_permissions: frozenset[Permission], asked: Limits
) -> Limits:
    """The limits of a new key: what was `asked`, else what its issuer passes on.

    A key passes on its restriction, allowed IPs and expiry; a role what it may grant.
    """
    restriction, ips, expires_at = asked.restriction, asked.allowed_ips, asked.expires_at
    if isinstance(actor, KeyActor):
        if restriction is None and actor.restriction is not None:
            restriction = actor.restriction & plan_permissions
        ips = ips or actor.allowed_ips
        expires_at = expires_at or actor.expires_at
    elif isinstance(actor, UserActor) and restriction is None:
        withheld = ROLE_WITHHOLDS.get(Role(actor.role), frozenset())
        if plan_permissions & withheld:
            restriction = plan_permissions - withheld
    return Limits(restriction, tuple(ips), expires_at)


def authorize(
    actor: Actor,
    command: Command,
    *,
    org_id: UUID | None = None,
    key: KeyFacts | None = None,
    grant: KeyGrant | WebhookGrant | None = None,
    webhook: WebhookFacts | None = None,
) -> None:
    """Raise the refusal unless `actor` may run `command` (in `org_id`, on `key`, so that a key
    can then do what `grant` says).

    NotFound when the organization or key does not exist for the actor; PermissionExceeded
    (a key) or NotAllowed (a user) when it exists but the actor may not.
    """
    if isinstance(actor, Operator | System):
        return
    if not isinstance(actor, KeyActor | UserActor):  # fail closed on anything else (a name)
        raise TypeError(f"not an actor: {type(actor).__name__}")
    if key is not None and not sees(actor, key):
        raise NotFound("no such API key")
    if webhook is not None and not sees(actor, webhook):
        raise NotFound("no such webhook endpoint")
    for other in (org_id, None if grant is None else grant.org_id):
        if other is not None and other != actor.org_id:
            raise NotFound("no such organization")
    if isinstance(actor, KeyActor):
        _authorize_key(actor, command, key, grant)
    else:
        _authorize_user(actor, command, key, grant)


def allows(
    actor: Actor,
    command: Command,
    *,
    org_id: UUID | None = None,
    key: KeyFacts | None = None,
    grant: KeyGrant | WebhookGrant | None = None,
    webhook: WebhookFacts | None = None,
) -> bool:
    """Whether `authorize` would let `actor` run `command` (to offer it, or not)."""
    try:
        authorize(actor, command, org_id=org_id, key=key, grant=grant, webhook=webhook)
    except (NotFound, PermissionExceeded, NotAllowed):
        return False
    return True


def _authorize_key(
    actor: KeyActor, command: Command, key: KeyFacts | None, grant: KeyGrant | WebhookGrant | None
) -> None:
    needed = PERMISSION[command]
    if needed is None:
        raise PermissionExceeded(f"an API key cannot {_WHAT[command]}")
    if needed not in actor.permissions:
        raise PermissionExceeded(f"this key lacks the {needed.value} permission")
    issues_or_changes = command in KEY_CHANGES or command in {
        Command.CREATE_KEY,
        Command.MANAGE_WEBHOOKS,
        Command.SET_KEY_POLICY,
    }
    if command is Command.SET_KEY_POLICY:
        _refuse_policy_change(actor)
    revokes_itself = (
        command is Command.REVOKE_KEY and key is not None and key.key_id == actor.key_id
    )
    if actor.retiring and issues_or_changes and not revokes_itself:
        raise PermissionExceeded(
            "this key was rolled or flagged as possibly exposed: it may no longer create or "
            "change keys, webhooks or the key policy (it may still revoke itself); use its "
            "successor"
        )
    if key is not None and command in KEY_CHANGES and not key.permissions <= actor.permissions:
        # Not naming them: a key may change keys without being allowed to read them.
        raise PermissionExceeded(
            f"a key cannot {_VERB[command]} a key with permissions it lacks itself"
        )
    if isinstance(grant, WebhookGrant):
        _refuse_webhook_beyond_self(actor, grant)
    elif grant is not None:
        # Changing allowed IPs moves where a key works, not how long: its expiry is not asked.
        _refuse_beyond_self(actor, grant, lifetime=command is not Command.SET_KEY_ALLOWED_IPS)


def _refuse_policy_change(actor: KeyActor) -> None:
    """The key policy binds and revokes every key of the organization: only a key that could
    change any of them may change it (no test key, no restriction, no expiry, no networks)."""
    if actor.env == Environment.TEST:
        raise PermissionExceeded(
            "a test key cannot change the organization's key policy, which governs live keys"
        )
    if actor.restriction is not None or actor.expires_at is not None or actor.allowed_ips:
        raise PermissionExceeded(
            "only an unrestricted key without an expiry or network limits may change the "
            "organization's key policy: it governs, and may revoke, every key (use the "
            "dashboard, or such a key)"
        )


def _refuse_webhook_beyond_self(actor: KeyActor, grant: WebhookGrant) -> None:
    """No key may have sent to a URL what it could not read itself (another environment's
    events, key objects without `api_keys:read`, endpoints without `webhooks:read`), nor leave
    an endpoint that outlives it or sends from elsewhere: an endpoint has neither an expiry
    nor a network of its own."""
    if grant.env == Environment.LIVE and actor.env == Environment.TEST:
        raise PermissionExceeded("a test key cannot add or change live webhook endpoints")
    if grant.events & KEY_OBJECT_EVENTS and Permission.API_KEYS_READ not in actor.permissions:
        raise PermissionExceeded(
            "these webhook events carry API key objects: subscribing to them needs the "
            "api_keys:read permission, which this key lacks"
        )
    if grant.events - KEY_OBJECT_EVENTS and Permission.WEBHOOKS_READ not in actor.permissions:
        raise PermissionExceeded(
            "webhook.disabled carries webhook endpoints: subscribing to it needs the "
            "webhooks:read permission, which this key lacks"
        )
    if actor.expires_at is not None or actor.allowed_ips:
        raise PermissionExceeded(
            "a key that expires or works only from some networks cannot add or change webhook "
            "endpoints: an endpoint would outlive it and send from anywhere (use a key without "
            "those limits, or the dashboard)"
        )


def _refuse_beyond_self(actor: KeyActor, grant: KeyGrant, *, lifetime: bool) -> None:
    """No key may leave behind a key that can do more than itself, from elsewhere, or longer."""
    if grant.env == Environment.LIVE and actor.env == Environment.TEST:
        raise PermissionExceeded("a test key cannot create live keys")
    if not grant.permissions <= actor.permissions:
        raise PermissionExceeded(
            "a key cannot grant what it lacks itself: "
            f"{permission_names(grant.permissions - actor.permissions)}"
        )
    if actor.allowed_ips and not _within(grant.allowed_ips, actor.allowed_ips):
        raise PermissionExceeded(
            "a key limited to some networks cannot leave a key usable from others: "
            f"keep allowed_ips within {', '.join(actor.allowed_ips)}"
        )
    if (
        lifetime
        and actor.expires_at is not None
        and (grant.expires_at is None or grant.expires_at > actor.expires_at)
    ):
        raise PermissionExceeded(
            "a key that expires cannot leave a key that outlives it: "
            f"set expires_at no later than {actor.expires_at.isoformat()}"
        )


def _within(networks: tuple[str, ...], allowed: tuple[str, ...]) -> bool:
    """Whether every network of `networks` (none: anywhere) lies inside one of `allowed`."""
    if not networks:
        return False
    outer = [ipaddress.ip_network(n, strict=False) for n in allowed]
    for text in networks:
        inner = ipaddress.ip_network(text, strict=False)
        if not any(
            inner.version == o.version and inner.subnet_of(o)  # type: ignore[arg-type]
            for o in outer
        ):
            return False
    return True


def _authorize_user(
    actor: UserActor, command: Command, key: KeyFacts | None, grant: KeyGrant | WebhookGrant | None
) -> None:
    role = Role(actor.role)
    own = key is not None and key.created_by == actor.name
    if command not in ROLE_COMMANDS[role] and not (
        own and command in OWN_KEY_COMMANDS.get(role, frozenset())
    ):
        if command in OWN_KEY_COMMANDS.get(role, frozenset()):
            raise NotAllowed(
                f"a {role.value} may {_VERB[command]} the API keys they created, not others"
            )
        raise NotAllowed(f"your role ({role.value}) does not allow you to {_WHAT[command]}")
    needed = PERMISSION[command]
    if needed is not None and needed not in actor.plan_permissions:
        raise NotAllowed(
            f"your organization's plan does not include this: to {_WHAT[command]} it needs "
            f"{needed.value} (ask about the pro plan)"
        )
    withheld = ROLE_WITHHOLDS.get(role, frozenset())
    if isinstance(grant, KeyGrant) and grant.permissions & withheld:
        named = permission_names(grant.permissions & withheld)
        raise NotAllowed(
            f"a {role.value} cannot issue keys with {named}: "
            "such a key could change others' keys or webhooks (ask an owner or admin)"
        )
